"""The JSON API and the dashboard's data, as a pure-ish function from a request to a response.

No sockets here: :class:`Api` takes a :class:`Request` and returns a :class:`Response`, so every endpoint,
status code and refusal is testable without a server. Reads come from the controller's last view; changes
are checked (auth, VM, body, then :mod:`autoballoon.ops`) before they are handed to the controller, so a
refused request changes nothing and is refused exactly as the command line refuses it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoballoon import ops
from autoballoon.errors import (
    AutoballoonError,
    BackendError,
    InvalidValueError,
    LimitError,
    RefusedError,
    UnknownVMError,
)
from autoballoon.model import GuestPolicy, GuestSnapshot, HostSnapshot
from autoballoon.server import payload
from autoballoon.server.auth import bearer_matches
from autoballoon.server.history import History
from autoballoon.server.source import ServerView, Source
from autoballoon.server.tunables import ServerTunables
from autoballoon.views import guest_detail, guest_row, host_view

JSON = "application/json"
PREFIX = "/api/v1/"

#: Which JSON key a refusal from :mod:`autoballoon.ops` is about (ops names things as the CLI says them).
_FIELD_OF = {
    "target": payload.TARGET_KEY,
    "--live change": "vm",
    "policy minimum": "min_bytes",
    "policy maximum": "max_bytes",
    "shares": "shares",
    "buffer": "buffer",
    "policy field": "body",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


class ApiError(Exception):
    """A request answered with a 4xx/5xx and a JSON error naming the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = tuple(extra.items())

    def response(self) -> Response:
        body = {"error": {"status": self.status, "message": str(self), "field": self.field}}
        return Response(self.status, _dump(body), headers=self.headers)


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def error_of(e: AutoballoonError) -> ApiError:
    """The HTTP form of one of our exceptions: refused = 4xx naming the field, backend failure = 502."""
    if isinstance(e, UnknownVMError):
        return ApiError(404, str(e), "vm")
    if isinstance(e, LimitError):
        return ApiError(422, str(e), _FIELD_OF.get(e.what, e.what))
    if isinstance(e, InvalidValueError):
        return ApiError(400, str(e), _FIELD_OF.get(e.what, e.what))
    if isinstance(e, RefusedError):
        return ApiError(400, str(e))
    if isinstance(e, BackendError):
        return ApiError(502, str(e), getattr(e, "vm", None) and "vm")
    return ApiError(500, str(e))


def plan_status(view: ServerView, name: str) -> tuple[str, str] | None:
    """The controller's ``(status, reason)`` for a VM, or None if its last decision did not judge it."""
    plan = view.plan
    if plan is None or name not in plan.status:
        return None
    return str(plan.status[name]), plan.status_reason.get(name, "")


def is_action(event: Mapping[str, Any]) -> bool:
    """A journal entry that moved a balloon target (others are warnings and operator notes)."""
    return "new_target" in event or "new_target_bytes" in event


class Api:
    """Routes ``/api/v1/…``; cached renderings are shared by all clients until the next tick."""

    def __init__(
        self,
        source: Source,
        history: History,
        tunables: ServerTunables,
        token: bytes | None = None,
    ) -> None:
        self._source = source
        self._history = history
        self._tun = tunables
        self._token = token
        self._cache: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        self._cache_lock = threading.Lock()
        self._get: list[tuple[re.Pattern[str], Callable[..., Any]]] = [
            (re.compile(r"vms"), self._vms),
            (re.compile(r"vms/(?P<name>[^/]+)"), self._vm),
            (re.compile(r"host"), self._host),
            (re.compile(r"events"), self._events),
            (re.compile(r"config"), self._config),
            (re.compile(r"dashboard"), self._dashboard),
        ]
        self._post: list[tuple[re.Pattern[str], Callable[..., Any]]] = [
            (re.compile(r"vms/(?P<name>[^/]+)/target"), self._post_target),
            (re.compile(r"vms/(?P<name>[^/]+)/policy"), self._post_policy),
            (re.compile(r"vms/(?P<name>[^/]+)/release"), self._post_release),
        ]

    # -- plumbing ---------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        try:
            return self._route(req)
        except ApiError as e:
            return e.response()
        except AutoballoonError as e:
            return error_of(e).response()

    def _route(self, req: Request) -> Response:
        rest = req.path[len(PREFIX) :] if req.path.startswith(PREFIX) else None
        if rest is None:
            raise ApiError(404, f"no such endpoint {req.path!r}", "path")
        table = {"GET": self._get, "HEAD": self._get, "POST": self._post}.get(req.method)
        for method, routes in (("GET", self._get), ("POST", self._post)):
            for pattern, handler in routes:
                match = pattern.fullmatch(rest)
                if match is None:
                    continue
                if routes is not table:
                    raise ApiError(405, f"{req.method} is not allowed on {req.path}", "method", Allow=method)
                return handler(req, **match.groupdict())
        raise ApiError(404, f"no such endpoint {req.path!r}", "path")

    def _view(self) -> tuple[ServerView, HostSnapshot]:
        view = self._source.view()
        if view.snapshot is None:
            raise ApiError(
                503,
                "the controller has not read the host yet; retry in a moment",
                None,
                **{"Retry-After": "1"},
            )
        return view, view.snapshot

    def _cached(self, key: str, version: tuple[Any, ...], render: Callable[[], Any]) -> Response:
        """Render once per tick and share the bytes: 20 dashboards cost one serialisation, not 20."""
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return Response(200, hit[1])
        body = _dump(render())
        with self._cache_lock:
            self._cache[key] = (version, body)
        return Response(200, body)

    def _version(self, view: ServerView, snap: HostSnapshot) -> tuple[Any, ...]:
        last_seq = view.events[-1].get("seq") if view.events else None
        return (snap.time, id(view.plan), self._history.version, last_seq, view.ticks.count)

    @staticmethod
    def _no_query(req: Request, allowed: tuple[str, ...] = ()) -> None:
        for key in req.query:
            if key not in allowed:
                accepted = ", ".join(allowed) if allowed else "none"
                raise ApiError(400, f"unknown query parameter {key!r}; accepted: {accepted}", key)

    @staticmethod
    def _guest(snap: HostSnapshot, name: str) -> GuestSnapshot:
        g = snap.guest(name)
        if g is None:
            raise UnknownVMError(name, snap.names)
        return g

    # -- reads ------------------------------------------------------------------------------------------

    def _vm_rows(self, view: ServerView, snap: HostSnapshot) -> list[dict[str, Any]]:
        return [guest_row(g, snap.wall_time, plan_status(view, g.name)) for g in snap.guests]

    def _vms(self, req: Request) -> Response:
        self._no_query(req)
        view, snap = self._view()
        return self._cached("vms", self._version(view, snap), lambda: self._vm_rows(view, snap))

    def _vm(self, req: Request, name: str) -> Response:
        self._no_query(req)
        view, snap = self._view()
        g = self._guest(snap, name)
        body = guest_detail(g, snap.wall_time)
        status = plan_status(view, name)
        if status is not None:
            body["status"], body["status_reason"] = status
        point = self._history.latest(name)
        body["swap_in_bytes_per_s"] = point.swap_in_bps if point else None
        body["major_faults_per_s"] = point.major_faults_ps if point else None
        return Response(200, _dump(body))

    def _host_body(self, view: ServerView, snap: HostSnapshot) -> dict[str, Any]:
        body = host_view(snap)
        body.update(
            {
                "uri": view.uri,
                "budget_bytes": view.plan.budget if view.plan is not None else None,
                "reserve_bytes": view.reserve_bytes,
                "time": snap.time,
                "wall_time": snap.wall_time,
                "interval_s": view.interval_s,
                "ticks": view.ticks.count,
                "last_tick_s": view.ticks.last_s,
                "backend_errors": view.backend_errors,
                "reconnects": view.reconnects,
                "shrink_paused": view.shrink_paused,
            }
        )
        return body

    def _host(self, req: Request) -> Response:
        self._no_query(req)
        view, snap = self._view()
        return self._cached("host", self._version(view, snap), lambda: self._host_body(view, snap))

    def _events(self, req: Request) -> Response:
        self._no_query(req, ("limit", "before", "vm"))
        limit = _int_param(req, "limit", self._tun.events_default_limit, 1, self._tun.events_max_limit)
        before = _int_param(req, "before", None, 0, None)
        vm = req.query.get("vm", [None])[-1]
        view = self._source.view()
        page: list[Mapping[str, Any]] = []
        for e in reversed(view.events):
            if before is not None and e.get("seq", 0) >= before:
                continue
            if vm is not None and e.get("vm") != vm:
                continue
            page.append(e)
            if len(page) > limit:
                break
        more = len(page) > limit
        page = page[:limit]
        next_before = page[-1].get("seq") if more and page else None
        return Response(200, _dump({"events": page, "next_before": next_before}))

    def _config(self, req: Request) -> Response:
        self._no_query(req)
        view = self._source.view()
        return Response(200, _dump(dict(view.config)))

    def _dashboard_body(self, view: ServerView, snap: HostSnapshot) -> dict[str, Any]:
        vms = []
        for row in self._vm_rows(view, snap):
            row["history"] = self._history.series(row["name"])
            vms.append(row)
        actions = [e for e in reversed(view.events) if is_action(e)][: self._tun.dashboard_actions]
        warnings = [e for e in reversed(view.events) if not is_action(e)][: self._tun.dashboard_actions]
        return {
            "host": self._host_body(view, snap),
            "vms": vms,
            "actions": actions,
            "events": warnings,
            "poll_ms": self._tun.dashboard_poll_ms,
            "writable": self._token is not None,
        }

    def _dashboard(self, req: Request) -> Response:
        self._no_query(req)
        view, snap = self._view()
        return self._cached("dashboard", self._version(view, snap), lambda: self._dashboard_body(view, snap))

    # -- changes ----------------------------------------------------------------------------------------

    def _authorise(self, req: Request) -> None:
        if self._token is None:
            raise ApiError(
                403, "changes over HTTP are off: start the daemon with --api-token-file FILE", "Authorization"
            )
        if not bearer_matches(req.headers.get("authorization"), self._token):
            raise ApiError(
                401,
                "a valid 'Authorization: Bearer <token>' header is required for changes",
                "Authorization",
                **{"WWW-Authenticate": 'Bearer realm="autoballoon"'},
            )

    def _post_target(self, req: Request, name: str) -> Response:
        self._authorise(req)
        _view, snap = self._view()
        guest = self._guest(snap, name)
        size = payload.target(payload.json_object(req.body))
        ops.resolve_scope(guest, live=True, config=False)
        ops.check_target(guest, size)
        applied = self._source.submit_target(name, size)
        return Response(
            200 if applied else 202, _dump({"vm": name, "target_bytes": size, "applied": applied})
        )

    def _post_policy(self, req: Request, name: str) -> Response:
        self._authorise(req)
        _view, snap = self._view()
        guest = self._guest(snap, name)
        changes = payload.policy_changes(payload.json_object(req.body))
        fields = guest.policy.to_json()
        fields.update(changes)  # type: ignore[arg-type]
        policy = GuestPolicy(**fields)  # type: ignore[arg-type]
        ops.validate_policy(guest, policy)
        result = self._source.submit_policy(name, changes)
        applied = result is not None
        stored = result if result is not None else policy
        body = {"vm": name, "policy": stored.to_json(), "applied": applied}
        return Response(200 if applied else 202, _dump(body))

    def _post_release(self, req: Request, name: str) -> Response:
        """End a VM's quarantine (``autoballoon release VM``); 409 if it is not quarantined."""
        self._authorise(req)
        _view, snap = self._view()
        self._guest(snap, name)
        if req.body.strip() not in (b"", b"{}"):
            raise ApiError(400, "release takes no body (or an empty JSON object)", "body")
        release = getattr(self._source, "submit_release", None)
        if release is None:
            raise ApiError(501, "this server cannot release quarantines", None)
        try:
            applied = release(name)
        except RefusedError as e:
            if isinstance(e, UnknownVMError):
                raise
            raise ApiError(409, str(e), "vm") from None
        return Response(200 if applied else 202, _dump({"vm": name, "released": True, "applied": applied}))


def _int_param(req: Request, name: str, default: int | None, low: int, high: int | None) -> int | None:
    values = req.query.get(name)
    if not values:
        return default
    text = values[-1]
    accepted = f"a whole number from {low}" + (f" to {high}" if high is not None else "")
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"invalid {name} {text!r}: expected {accepted}", name) from None
    if value < low or (high is not None and value > high):
        raise ApiError(400, f"invalid {name} {text!r}: expected {accepted}", name)
    return value
