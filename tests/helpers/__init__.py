"""Builders the tests share: hand-made snapshots of guests and hosts, and a short loop over decisions.

Test modules import from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autoballoon.health import HealthState
from autoballoon.model import (
    BalloonConfig,
    GuestPolicy,
    GuestSnapshot,
    GuestStats,
    HostSnapshot,
    Plan,
    VMState,
)
from autoballoon.policy import Inputs, PolicyState, decide
from autoballoon.tunables import Tunables
from autoballoon.units import GiB

#: Stats are stamped with this wall clock at snapshot time 0.
EPOCH = 1000.0
HOST_RAM = 64 * GiB


def make_guest(
    name: str = "vm",
    *,
    max_bytes: int = 4 * GiB,
    target: int | None = None,
    actual: int | None = None,
    used: int | None = 1 * GiB,
    time: float = 0.0,
    swap_in: int = 0,
    major_faults: int = 0,
    autodeflate: bool = True,
    stats_period: int | None = 1,
    policy: GuestPolicy | None = None,
    state: VMState = VMState.RUNNING,
    model: str = "virtio",
    cpu_time_ns: int | None = None,
    os_type: str = "linux",
) -> GuestSnapshot:
    """A fresh Linux guest whose MemAvailable (and MemFree: it has no page cache) is what it has minus
    ``used`` (None: no stats at all), with the balloon accounting of a real guest: with autodeflate
    MemTotal stays at max and the balloon counts as used; without, MemTotal is what the balloon leaves."""
    target = max_bytes if target is None else target
    actual = target if actual is None else actual
    stats = GuestStats()
    if used is not None:
        total = max_bytes if autodeflate else actual
        available = total - used - (max_bytes - actual if autodeflate else 0)
        stats = GuestStats(
            total=total,
            available=max(0, available),
            free=max(0, available),  # a fresh guest: no page cache, what it can have is free
            swap_in=swap_in,
            major_faults=major_faults,
            last_update=EPOCH + time,
        )
    return GuestSnapshot(
        name=name,
        state=state,
        max_bytes=max_bytes,
        target_bytes=target,
        actual_bytes=actual,
        stats=stats,
        balloon=BalloonConfig(model=model, autodeflate=autodeflate, stats_period=stats_period),
        policy=policy or GuestPolicy(),
        cpu_time_ns=cpu_time_ns,
        os_type=os_type,  # type: ignore[arg-type]  # tests pass the Literal's values as str
    )


def make_host(*guests: GuestSnapshot, time: float = 0.0, available: int = 32 * GiB) -> HostSnapshot:
    return HostSnapshot(
        time=time, wall_time=EPOCH + time, mem_total=HOST_RAM, mem_available=available, guests=tuple(guests)
    )


def inputs(policies: Mapping[str, GuestPolicy] | None = None, health: HealthState | None = None) -> Inputs:
    return Inputs(policies=policies or {}, health=health or HealthState())


def run(
    snapshots: Sequence[HostSnapshot], tunables: Tunables, state: PolicyState | None = None
) -> tuple[list[Plan], PolicyState]:
    """The default policy over a series of snapshots; every plan, and the last state."""
    state = state or PolicyState()
    plans = []
    for snap in snapshots:
        plan, state = decide(snap, inputs(), state, tunables)
        plans.append(plan)
    return plans, state


def targets(plan: Plan, snap: HostSnapshot) -> dict[str, int]:
    """Each VM's target once ``plan`` is applied to ``snap``."""
    out = {g.name: g.target_bytes for g in snap.guests}
    out.update({a.vm: a.new_target for a in plan.actions})
    return out
