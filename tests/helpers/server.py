"""A hand-built daemon state for the server's tests: exact numbers, no controller, no clock."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from email.message import Message
from typing import Any

from prometheus_client import Histogram

from autoballoon import safety
from autoballoon.controller import TICK_BUCKETS_S, TICK_METRIC
from autoballoon.errors import RefusedError
from autoballoon.model import GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, Plan, VMState
from autoballoon.server.source import ServerView
from autoballoon.tunables import DEFAULT_TUNABLES
from autoballoon.units import GiB, MiB

WALL0 = 1_700_000_000.0


def guest(name: str, max_gib: int, target_mib: int, **kw: Any) -> GuestSnapshot:
    stats = GuestStats(
        total=max_gib * GiB,
        available=max_gib * GiB - target_mib * MiB // 2,
        free=100 * MiB,
        swap_in=kw.pop("swap_in", 4096),
        major_faults=kw.pop("major_faults", 10),
        last_update=WALL0 - kw.pop("age", 3.0),
    )
    return GuestSnapshot(
        name=name,
        state=kw.pop("state", VMState.RUNNING),
        max_bytes=max_gib * GiB,
        target_bytes=target_mib * MiB,
        actual_bytes=target_mib * MiB,
        stats=stats,
        **kw,
    )


def host(time: float = 100.0, guests: tuple[GuestSnapshot, ...] | None = None) -> HostSnapshot:
    return HostSnapshot(
        time=time,
        wall_time=WALL0 + (time - 100.0),
        mem_total=32 * GiB,
        mem_available=12 * GiB,
        guests=guests
        if guests is not None
        else (
            guest("web", 4, 3072),
            guest("db", 8, 6144, policy=GuestPolicy(min_bytes=2 * GiB, shares=2000)),
            guest("batch", 2, 1024),
        ),
        psi_some_avg10=1.5,
        psi_full_avg10=0.25,
        hostname="fakehost",
    )


def plan() -> Plan:
    return Plan(
        status={"web": "managed", "db": "managed", "batch": "stuck"},
        status_reason={"batch": "actual has not moved toward target for 12 s"},
        budget=18 * GiB,
    )


#: The fake's tick durations: 2 ticks under 5 ms, 4 more under 10 ms, 1 under 100 ms.
TICKS_S = (0.002, 0.004, 0.006, 0.007, 0.008, 0.009, 0.05)


def events() -> tuple[Mapping[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for i in range(12):
        out.append(
            {
                "seq": i + 1,
                "time": 50.0 + i,
                "kind": "action",
                "vm": ("web", "db", "batch")[i % 3],
                "direction": "shrink",
                "old_target": (3072 + 16 * (i + 1)) * MiB,
                "new_target": (3072 + 16 * i) * MiB,
                "reason": "idle",
                "applied": True,
            }
        )
    out.append({"seq": 13, "time": 63.0, "kind": "stuck", "message": "balloon not moving", "vm": "batch"})
    return tuple(out)


class FakeSource:
    """A :class:`~autoballoon.server.source.Source` whose changes are applied at once and recorded; with
    ``stalled`` set they stay queued (their futures never resolve), as with a controller that is busy."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: list[tuple[str, str, object]] = []
        self.quarantined: set[str] = {"batch"}
        self.stalled = False
        self.tick_histogram = Histogram(TICK_METRIC, "Tick durations.", buckets=TICK_BUCKETS_S, registry=None)
        for seconds in TICKS_S:
            self.tick_histogram.observe(seconds)
        self.state = ServerView(
            snapshot=host(),
            plan=plan(),
            reserve_bytes=1 * GiB,
            ticks=len(TICKS_S),
            last_tick_s=TICKS_S[-1],
            actions={("shrink", "idle"): 10, ("grow", "pressure"): 2},
            backend_errors=3,
            reconnects=1,
            journal=events(),
            config={"interval_s": 2.0, "buffer": 0.2},
            interval_s=2.0,
            uri="fake:///",
        )

    def view(self) -> ServerView:
        with self.lock:
            return self.state

    def _replace_guest(self, name: str, **changes: Any) -> None:
        snap = self.state.snapshot
        assert snap is not None
        guests = tuple(replace(g, **changes) if g.name == name else g for g in snap.guests)
        self.state = replace(self.state, snapshot=replace(snap, guests=guests))

    def _done(self, result: object) -> Future[object]:
        future: Future[object] = Future()
        if not self.stalled:
            future.set_result(result)
        return future

    def submit_target(self, vm: str, target_bytes: int, *, force: bool = False) -> Future[object]:
        # The controller's one check of a hand target, which the API leaves to it.
        snap = self.state.snapshot
        guest = next((g for g in snap.guests if g.name == vm), None) if snap is not None else None
        if guest is not None:
            safety.check_target(guest, guest.policy, DEFAULT_TUNABLES, target_bytes, force=force)
        with self.lock:
            self.submitted.append(("target", vm, target_bytes))
            if not self.stalled:
                self._replace_guest(vm, target_bytes=target_bytes)
        return self._done(target_bytes)

    def submit_policy(self, vm: str, policy: GuestPolicy) -> Future[object]:
        with self.lock:
            self.submitted.append(("policy", vm, policy))
            if not self.stalled:
                self._replace_guest(vm, policy=policy)
        return self._done(policy)

    def submit_release(self, vm: str) -> Future[object]:
        with self.lock:
            if vm not in self.quarantined:
                raise RefusedError(f"refused: VM {vm!r} is not quarantined; nothing was changed")
            self.submitted.append(("release", vm, None))
            if not self.stalled:
                self.quarantined.discard(vm)
        return self._done(None)

    def tick(self, dt: float = 2.0) -> None:
        """Move time on: every guest's swap-in grows by 1 MiB per second of ``dt``."""
        with self.lock:
            snap = self.state.snapshot
            assert snap is not None
            guests = tuple(
                replace(g, stats=replace(g.stats, swap_in=(g.stats.swap_in or 0) + int(dt * MiB)))
                for g in snap.guests
            )
            new = replace(snap, time=snap.time + dt, wall_time=snap.wall_time + dt, guests=guests)
            self.state = replace(self.state, snapshot=new)


def asgi_client(source: Any, token: str | None = None, history: Any = None, **tunables: Any) -> Any:
    """The whole HTTP application over ``source`` in-process (Starlette's test client: no socket), for
    tests that drive the API step by step between controller ticks (and, with ``history``, feed its
    history themselves)."""
    from starlette.testclient import TestClient

    from autoballoon.server.api import Api
    from autoballoon.server.app import AllowedHosts, create_app
    from autoballoon.server.history import History
    from autoballoon.server.metrics import make_registry
    from autoballoon.server.tunables import TUNABLES

    tun = replace(TUNABLES, **tunables)
    history = History(tun.history_points) if history is None else history
    api = Api(source, history, tun, token.encode() if token is not None else None)
    registry = make_registry(source.view, history, tick_histogram=source.tick_histogram)
    app = create_app(api, registry, AllowedHosts("testserver"))
    return TestClient(app, raise_server_exceptions=False)


#: The API token the server tests start their servers with.
TOKEN = "s3cret-token-0123456789abcdef"


def call(
    url: str, method: str = "GET", body: Any = None, token: str | None = None, raw: bytes | None = None
) -> tuple[int, Any, Message]:
    """One request; (status, the JSON answer or the raw bytes, the headers by case-insensitive name)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        status, text, headers = e.code, e.read(), e.headers
    ctype = headers.get("Content-Type", "")
    return status, json.loads(text) if ctype.startswith("application/json") else text, headers
