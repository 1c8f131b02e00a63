"""A hand-built daemon state for the server's tests: exact numbers, no controller, no clock."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autoballoon.model import GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, Plan, VMState
from autoballoon.server.source import ServerView, TickStats
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
    """A :class:`~autoballoon.server.source.Source` whose changes are applied at once, and recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: list[tuple[str, str, object]] = []
        self.state = ServerView(
            snapshot=host(),
            plan=plan(),
            reserve_bytes=1 * GiB,
            ticks=TickStats(count=7, sum_s=0.07, buckets=((0.005, 2), (0.01, 6), (0.1, 7)), last_s=0.009),
            actions={("shrink", "idle"): 10, ("grow", "pressure"): 2},
            backend_errors=3,
            reconnects=1,
            events=events(),
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

    def submit_target(self, vm: str, target_bytes: int) -> bool:
        with self.lock:
            self.submitted.append(("target", vm, target_bytes))
            self._replace_guest(vm, target_bytes=target_bytes)
        return True

    def submit_policy(self, vm: str, changes: Mapping[str, object]) -> GuestPolicy:
        with self.lock:
            self.submitted.append(("policy", vm, dict(changes)))
            snap = self.state.snapshot
            assert snap is not None
            g = snap.guest(vm)
            assert g is not None
            fields = g.policy.to_json() | dict(changes)
            policy = GuestPolicy(**fields)  # type: ignore[arg-type]
            self._replace_guest(vm, policy=policy)
            return policy

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
