"""The JSON API under ``/api/v1/`` and the dashboard's data, as FastAPI routes over one :class:`Api`.

:class:`Api` holds what the routes share (the source, the history, the token, a cache of renderings) and
does the work; :func:`api_router` only binds it to URLs and documents each route for the OpenAPI
description served at ``/api/v1/openapi.json``. Reads come from the controller's last view; changes are
checked (auth, VM, body, then :mod:`autoballoon.ops`) before they are handed to the controller, so a
refused request changes nothing and is refused exactly as the command line refuses it. A change is then
awaited: its future resolves when the controller's loop has carried it out (200), or the deadline passes
first (202, still queued).

Request bodies are read here (bounded, streamed, chunked or not, and only once the token and the VM
are known) and parsed into their pydantic models by :func:`autoballoon.server.payload.parse`, not by
FastAPI's model binding, which would read an unbounded body before the token is checked and answer in
its own error shape; a hostile body must be a 4xx naming the field, never a parser's 500. The models'
JSON schemas are the request bodies of the OpenAPI description (:func:`_change_doc`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPBearer

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
from autoballoon.server.payload import Body, PolicyBody, ReleaseBody, TargetBody
from autoballoon.server.renders import Renders
from autoballoon.server.source import ServerView, Source, host_json
from autoballoon.server.tunables import ServerTunables
from autoballoon.views import guest_detail, guest_row, host_view, judged_fields

T = TypeVar("T")
B = TypeVar("B", bound=Body)
JSON = "application/json"
PREFIX = "/api/v1"

#: Which JSON key a refusal from :mod:`autoballoon.ops` is about (ops names things as the CLI says them).
_FIELD_OF = {
    "target": "target_bytes",
    "--live change": "vm",
    "policy minimum": "min_bytes",
    "policy maximum": "max_bytes",
    "shares": "shares",
    "buffer": "buffer",
    "policy field": "body",
}


class ApiError(Exception):
    """A request answered with a 4xx/5xx and a JSON error naming the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = headers

    def response(self) -> Response:
        body = {"error": {"status": self.status, "message": str(self), "field": self.field}}
        return Response(_dump(body), self.status, headers=self.headers, media_type=JSON)


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _json(body: Any, status: int = 200) -> Response:
    return Response(body if isinstance(body, bytes) else _dump(body), status, media_type=JSON)


def error_of(e: AutoballoonError) -> ApiError:
    """The HTTP form of one of our exceptions: refused = 4xx naming the field, backend failure = 502,
    anything else (the daemon stopped before carrying a change out) = 503."""
    if isinstance(e, UnknownVMError):
        return ApiError(404, str(e), "vm")
    if isinstance(e, LimitError):
        return ApiError(422, str(e), _FIELD_OF.get(e.what, e.what))
    if isinstance(e, InvalidValueError):
        return ApiError(400, str(e), _FIELD_OF.get(e.what, e.what))
    if isinstance(e, RefusedError):
        return ApiError(400, str(e))
    if isinstance(e, BackendError):
        return ApiError(502, str(e), "vm" if e.vm else None)
    return ApiError(503, str(e))


def plan_status(view: ServerView, name: str) -> tuple[str, str] | None:
    """The controller's ``(status, reason)`` for a VM, or None if its last decision did not judge it."""
    plan = view.plan
    if plan is None or name not in plan.status:
        return None
    return str(plan.status[name]), plan.status_reason.get(name, "")


def planned_targets(view: ServerView) -> dict[str, int]:
    """The targets the last decision set, by VM (a VM it did not move keeps the snapshot's)."""
    return {a.vm: a.new_target for a in view.plan.actions} if view.plan is not None else {}


#: What makes two journal entries the same for the dashboard: a stuck VM's retries, a repeated warning.
_SAME = ("vm", "kind", "reason", "old_target", "new_target", "message", "applied", "error")


def folded(entries: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` entries (newest first), each entry that comes again folded into its newest
    showing, which says how many it stands for (``repeats``): a stuck VM's retries every few seconds
    filled the page's lists and pushed every other entry out. Stops at the first new entry past the limit."""
    out: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in entries:
        key = tuple(str(e.get(k)) for k in _SAME)
        shown = seen.get(key)
        if shown is not None:
            shown["repeats"] += 1
            continue
        if len(out) == limit:
            break
        shown = seen[key] = {**e, "repeats": 1}
        out.append(shown)
    return out


def is_action(event: Mapping[str, Any]) -> bool:
    """A journal entry that moved a balloon target (others are warnings and operator notes)."""
    return "new_target" in event or "new_target_bytes" in event


def no_query(request: Request, allowed: tuple[str, ...] = ()) -> None:
    """Refuse query parameters a route does not take (a typo must not be silently ignored)."""
    for key in request.query_params:
        if key not in allowed:
            accepted = ", ".join(allowed) if allowed else "none"
            raise ApiError(400, f"unknown query parameter {key!r}; accepted: {accepted}", key)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes whether it comes with a Content-Length or chunked; a
    longer one is refused with 413 as soon as it is known to be too long."""
    too_long = ApiError(413, f"request body must be 0 to {limit} bytes", "body")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_long
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_long
        chunks.append(chunk)
    return b"".join(chunks)


class Api:
    """The routes' shared state; cached renderings are shared by all clients until the next tick."""

    def __init__(
        self,
        source: Source,
        history: History,
        tunables: ServerTunables,
        token: bytes | None = None,
    ) -> None:
        self.source = source
        self.history = history
        self.tun = tunables
        self.token = token
        self._renders = Renders()
        #: The dashboard's renderings by ``since``: a few values per tick are what pages in step send,
        #: but any client may send any number of them.
        self.slices = Renders(max_keys=tunables.dashboard_slices_kept)

    # -- reads ------------------------------------------------------------------------------------------

    def view(self) -> tuple[ServerView, HostSnapshot]:
        view = self.source.view()
        if view.snapshot is None:
            raise ApiError(
                503,
                "the controller has not read the host yet; retry in a moment",
                None,
                **{"Retry-After": str(self.tun.retry_after_s)},
            )
        return view, view.snapshot

    def cached(
        self,
        key: Hashable,
        render: Callable[[ServerView, HostSnapshot], Any],
        renders: Renders | None = None,
    ) -> Response:
        """Render once per tick and share the bytes: 20 dashboards cost one serialisation, not 20."""
        view, snap = self.view()
        last_seq = view.journal[-1].get("seq") if view.journal else None
        version = (snap.time, id(view.plan), self.history.version, last_seq, view.ticks)
        kept = self._renders if renders is None else renders
        return _json(kept.get(key, version, lambda: _dump(render(view, snap))))

    @staticmethod
    def guest(snap: HostSnapshot, name: str) -> GuestSnapshot:
        g = snap.guest(name)
        if g is None:
            raise UnknownVMError(name, snap.names)
        return g

    def judged(self, view: ServerView, g: GuestSnapshot, planned: Mapping[str, int]) -> dict[str, Any]:
        """What the last decision sized for ``g`` (demand, OOM floor, need, want, its goal and the rule
        that bound it), its swap and fault rates from the history, and the harm they show; ``planned``
        is the decision's new targets by VM (see :func:`planned_targets`)."""
        point = self.history.latest(g.name)
        decision = view.plan.guests.get(g.name) if view.plan is not None else None
        swap = point.swap_in_bps if point else None
        faults = point.major_faults_ps if point else None
        moved = (g.target_bytes, planned.get(g.name, g.target_bytes))
        return judged_fields(decision, g.actual_bytes, swap, faults, view.swap_line_bytes_per_s, moved)

    def vm_rows(self, view: ServerView, snap: HostSnapshot) -> list[dict[str, Any]]:
        planned = planned_targets(view)
        return [
            guest_row(g, snap.wall_time, plan_status(view, g.name)) | self.judged(view, g, planned)
            for g in snap.guests
        ]

    def vm(self, name: str) -> dict[str, Any]:
        view, snap = self.view()
        g = self.guest(snap, name)
        body = guest_detail(g, snap.wall_time)
        status = plan_status(view, name)
        if status is not None:
            body["status"], body["status_reason"] = status
        body.update(self.judged(view, g, planned_targets(view)))
        return body

    def host_body(
        self, view: ServerView, snap: HostSnapshot, rows: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The host, the budget, the controller's counters, and the guests that suffer now with their
        worst harm (what the page's banner names); ``rows`` are the VM rows if already made."""
        rows = self.vm_rows(view, snap) if rows is None else rows
        body = host_view(snap)
        body.update(host_json(view))
        body.update(
            {
                "suffering": [{"vm": r["name"], "harm": r["harm"]} for r in rows if r["harm"] is not None],
                "budget_bytes": view.plan.budget if view.plan is not None else None,
                "time": snap.time,
                "wall_time": snap.wall_time,
            }
        )
        return body

    def events(self, limit: int, before: int | None, vm: str | None) -> dict[str, Any]:
        page: list[Mapping[str, Any]] = []
        for e in reversed(self.source.view().journal):
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
        return {"events": page, "next_before": next_before}

    def dashboard_body(
        self, view: ServerView, snap: HostSnapshot, since: float | None, coarse: bool = False
    ) -> dict[str, Any]:
        """What the page draws. With ``since`` (the ``history_until`` of the page's previous poll) each
        VM's history holds only the points after it: the page keeps the rest, so a poll of a 1,000-VM
        daemon moves kilobytes, not the megabytes of every chart's whole history. ``coarse``: the history
        is the coarse one (a point a minute for 6 h), for a chart window beyond ``fine_window_s``."""
        vms = self.vm_rows(view, snap)
        host = self.host_body(view, snap, vms)
        series = self.history.coarse_series if coarse else self.history.series
        for row in vms:
            row["history"] = series(row["name"], since)
        newest_first = list(reversed(view.journal))
        actions = folded((e for e in newest_first if is_action(e)), self.tun.dashboard_actions)
        warnings = folded((e for e in newest_first if not is_action(e)), self.tun.dashboard_actions)
        return {
            "host": host,
            "vms": vms,
            "actions": actions,
            "events": warnings,
            "poll_ms": self.tun.dashboard_poll_ms,
            "writable": self.token is not None,
            "history_points": self.tun.coarse_points if coarse else self.tun.history_points,
            "history_coarse": coarse,
            "history_until": self.history.last_time,
        }

    # -- changes ----------------------------------------------------------------------------------------

    def authorise(self, request: Request) -> None:
        if self.token is None:
            raise ApiError(
                403, "changes over HTTP are off: start the daemon with --api-token-file FILE", "Authorization"
            )
        if not bearer_matches(request.headers.get("authorization"), self.token):
            raise ApiError(
                401,
                "a valid 'Authorization: Bearer <token>' header is required for changes",
                "Authorization",
                **{"WWW-Authenticate": 'Bearer realm="autoballoon"'},
            )

    async def change(
        self,
        request: Request,
        name: str,
        model: type[B],
        prepare: Callable[[GuestSnapshot, B], tuple[T, Future[object]]],
    ) -> tuple[T, bool, object]:
        """Authorise, find the VM, read the body as ``model``, let ``prepare`` check it and submit it (it
        returns what was asked and the controller's future); then wait for the controller:
        ``(asked, True, result)`` once applied, ``(asked, False, None)`` if still queued at the deadline.
        A refusal or failure raises, and the exception handlers answer it."""
        no_query(request)
        self.authorise(request)
        _view, snap = self.view()
        guest = self.guest(snap, name)
        body = payload.parse(model, await read_body(request, self.tun.max_body_bytes))
        asked, future = prepare(guest, body)
        waiting = asyncio.wrap_future(future)
        # Never cancelled (the controller keeps it running); a late outcome is still retrieved, so an
        # exception that nobody awaits any more is not reported as "never retrieved".
        waiting.add_done_callback(lambda f: f.exception())
        done, _ = await asyncio.wait({waiting}, timeout=self.tun.submit_wait_s)
        if not done:
            return asked, False, None
        return asked, True, waiting.result()

    def target(self, guest: GuestSnapshot, body: TargetBody) -> tuple[int, Future[object]]:
        ops.resolve_scope(guest, live=True, config=False)
        return body.target_bytes, self.source.submit_target(guest.name, body.target_bytes, force=body.force)

    def policy(self, guest: GuestSnapshot, body: PolicyBody) -> tuple[GuestPolicy, Future[object]]:
        policy = body.over(guest.policy)
        ops.validate_policy(guest, policy)
        return policy, self.source.submit_policy(guest.name, policy)

    def release(self, guest: GuestSnapshot, body: ReleaseBody) -> tuple[None, Future[object]]:
        try:
            return None, self.source.submit_release(guest.name)
        except UnknownVMError:
            raise
        except RefusedError as e:
            raise ApiError(409, str(e), "vm") from None


# -- OpenAPI: what each route answers ------------------------------------------------------------------

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message", "field"],
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"], "description": "the parameter or JSON key at fault"},
            },
        }
    },
}
_WHY = {
    400: "bad JSON, unknown field, wrong type or form, bad query parameter",
    401: "missing or wrong Authorization: Bearer token",
    403: "changes are off (no --api-token-file)",
    404: "unknown VM or path",
    409: "the VM is not quarantined",
    413: "body over the limit",
    421: "a Host header this daemon does not answer to",
    422: "outside the VM's limits",
    502: "the hypervisor failed to carry out a valid change",
    503: "the server is at its connection limit or the controller has not read the host yet (both with "
    "Retry-After), or the controller stopped before carrying out the change",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": _WHY[c], "content": {JSON: {"schema": ERROR_SCHEMA}}} for c in codes}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {JSON: {"schema": schema}}}}


READ_ERRORS = (400, 421, 503)
CHANGE_ERRORS = (400, 401, 403, 404, 413, 421, 422, 502, 503)


def _change_doc(body: type[Body], answer: dict[str, Any]) -> dict[str, Any]:
    """Route keyword arguments documenting a change: its body (a reference to its model's schema, which
    the application puts under ``components/schemas``), 200 applied / 202 queued, its errors."""
    content = {"description": "applied (200) or queued (202)", "content": {JSON: {"schema": answer}}}
    refs, _ = payload.schemas()
    request_body = {"required": not body.may_be_empty, "content": {JSON: {"schema": refs[body]}}}
    return {
        "openapi_extra": {"requestBody": request_body},
        "responses": {200: content, 202: content, **_errors(*CHANGE_ERRORS)},
        "dependencies": [Depends(HTTPBearer(auto_error=False, scheme_name="token"))],
    }


def _answer(name: str, applied: bool, fields: dict[str, Any]) -> Response:
    return _json({"vm": name, **fields, "applied": applied}, 200 if applied else 202)


def api_router(api: Api) -> APIRouter:
    """The ``/api/v1`` routes bound to ``api``. Reads are plain functions (FastAPI runs them on its
    thread pool, so rendering 1,000 VMs never stalls the event loop); changes are coroutines that await
    the controller's future without holding a thread."""
    router = APIRouter(prefix=PREFIX)
    _read_routes(router, api)
    _change_routes(router, api)
    return router


#: The OpenAPI schema of an answer that is some JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _read_routes(router: APIRouter, api: Api) -> None:
    """The ``GET`` routes: the daemon's last view, rendered once per tick where many clients ask."""

    @router.get("/vms", responses={**_ok({"type": "array"}), **_errors(*READ_ERRORS)})
    def vms(request: Request) -> Response:
        """Every VM: the fields of `autoballoon list --json`, with the controller's status."""
        no_query(request)
        return api.cached("vms", api.vm_rows)

    @router.get("/vms/{name}", responses={**_ok(ANY_OBJECT), **_errors(*READ_ERRORS, 404)})
    def vm(request: Request, name: str) -> Response:
        """One VM: the fields of `autoballoon info --json`, its status and its swap-in and fault rates."""
        no_query(request)
        return _json(api.vm(name))

    @router.get("/host", responses={**_ok(ANY_OBJECT), **_errors(*READ_ERRORS)})
    def host(request: Request) -> Response:
        """The host, the budget and the controller's counters (ticks, tick percentiles, errors)."""
        no_query(request)
        return api.cached("host", api.host_body)

    @router.get("/events", responses={**_ok(ANY_OBJECT), **_errors(*READ_ERRORS)})
    def events(
        request: Request,
        limit: int = Query(api.tun.events_default_limit, ge=1, le=api.tun.events_max_limit),
        before: int | None = Query(None, ge=0, description="the `next_before` of the previous page"),
        vm: str | None = Query(None, description="only this VM's entries"),
    ) -> Response:
        """The journal, newest first, a page at a time."""
        no_query(request, ("limit", "before", "vm"))
        return _json(api.events(limit, before, vm))

    @router.get("/config", responses={**_ok(ANY_OBJECT), **_errors(*READ_ERRORS)})
    def config(request: Request) -> Response:
        """The effective configuration: every tunable, defaults, per-VM policies, where it came from."""
        no_query(request)
        return _json(dict(api.source.view().config))

    @router.get("/dashboard", responses={**_ok(ANY_OBJECT), **_errors(*READ_ERRORS)})
    def dashboard(
        request: Request,
        since: float | None = Query(
            None, ge=0, allow_inf_nan=False, description="only chart points after this (`history_until`)"
        ),
        window: float | None = Query(
            None, gt=0, le=api.tun.max_window_s, allow_inf_nan=False, description="the charts' window, s"
        ),
    ) -> Response:
        """What the dashboard draws: host, VMs with their chart history, latest actions and events."""
        no_query(request, ("since", "window"))
        coarse = window is not None and window > api.tun.fine_window_s
        return api.cached(
            (since, coarse), lambda view, snap: api.dashboard_body(view, snap, since, coarse), api.slices
        )


def _change_routes(router: APIRouter, api: Api) -> None:
    """The ``POST`` routes: a change to one VM, with its body and answer documented for OpenAPI."""
    target_answer = {
        "type": "object",
        "required": ["vm", "target_bytes", "applied"],
        "properties": {
            "vm": {"type": "string"},
            "target_bytes": {"type": "integer"},
            "applied": {"type": "boolean"},
        },
    }

    @router.post("/vms/{name}/target", **_change_doc(TargetBody, target_answer))
    async def post_target(request: Request, name: str) -> Response:
        """A manual target, honoured like `virsh setmem` (held for the manual grace period)."""
        size, applied, _ = await api.change(request, name, TargetBody, api.target)
        return _answer(name, applied, {"target_bytes": size})

    policy_answer = {
        "type": "object",
        "required": ["vm", "policy", "applied"],
        "properties": {"vm": {"type": "string"}, "policy": ANY_OBJECT, "applied": {"type": "boolean"}},
    }

    @router.post("/vms/{name}/policy", **_change_doc(PolicyBody, policy_answer))
    async def post_policy(request: Request, name: str) -> Response:
        """Merge the given fields into the VM's stored policy (`null` unsets one)."""
        policy, applied, result = await api.change(request, name, PolicyBody, api.policy)
        stored = result if isinstance(result, GuestPolicy) else policy
        return _answer(name, applied, {"policy": stored.to_json()})

    release_doc = _change_doc(
        ReleaseBody,
        {
            "type": "object",
            "required": ["vm", "released", "applied"],
            "properties": {
                "vm": {"type": "string"},
                "released": {"type": "boolean"},
                "applied": {"type": "boolean"},
            },
        },
    )
    release_doc["responses"].update(_errors(409))

    @router.post("/vms/{name}/release", **release_doc)
    async def post_release(request: Request, name: str) -> Response:
        """End the VM's health-guard quarantine (`autoballoon release VM`)."""
        _, applied, _ = await api.change(request, name, ReleaseBody, api.release)
        return _answer(name, applied, {"released": True})
