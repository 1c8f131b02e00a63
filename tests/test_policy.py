"""The default policy on hand-made snapshots: demand, want, growth, shrinking, budget, autodeflate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoballoon.guards import Status
from autoballoon.model import (
    BalloonConfig,
    GuestPolicy,
    GuestSnapshot,
    GuestStats,
    HostSnapshot,
    Plan,
    VMState,
)
from autoballoon.policy import PolicyState, decide, guest_used, water_fill
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

T = Tunables()
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
    policy: GuestPolicy | None = None,
    state: VMState = VMState.RUNNING,
    model: str = "virtio",
) -> GuestSnapshot:
    """A Linux guest whose MemAvailable is what it has minus ``used`` (None: no stats at all)."""
    target = max_bytes if target is None else target
    actual = target if actual is None else actual
    stats = GuestStats()
    if used is not None:
        total = max_bytes if autodeflate else actual
        available = total - used - (max_bytes - actual if autodeflate else 0)
        stats = GuestStats(
            total=total,
            available=max(0, available),
            swap_in=swap_in,
            major_faults=major_faults,
            last_update=1000.0 + time,
        )
    return GuestSnapshot(
        name=name,
        state=state,
        max_bytes=max_bytes,
        target_bytes=target,
        actual_bytes=actual,
        stats=stats,
        balloon=BalloonConfig(model=model, autodeflate=autodeflate, stats_period=1),
        policy=policy or GuestPolicy(),
    )


def make_host(*guests: GuestSnapshot, time: float = 0.0, available: int = 32 * GiB) -> HostSnapshot:
    return HostSnapshot(
        time=time, wall_time=1000.0 + time, mem_total=HOST_RAM, mem_available=available, guests=tuple(guests)
    )


def run(snapshots: list[HostSnapshot], tunables: Tunables = T) -> tuple[list[Plan], PolicyState]:
    state = PolicyState()
    plans = []
    for snap in snapshots:
        plan, state = decide(snap, {}, state, tunables)
        plans.append(plan)
    return plans, state


def targets(plan: Plan, snap: HostSnapshot) -> dict[str, int]:
    out = {g.name: g.target_bytes for g in snap.guests}
    out.update({a.vm: a.new_target for a in plan.actions})
    return out


def want_of(used: int, tunables: Tunables = T) -> int:
    raw = int(used * (1 + tunables.buffer)) + tunables.min_headroom_bytes
    return -(-raw // MiB) * MiB


def test_guest_used_subtracts_balloon_counted_in_memtotal() -> None:
    g = make_guest(max_bytes=4 * GiB, target=2 * GiB, used=1 * GiB, autodeflate=True)
    assert g.stats.total == 4 * GiB
    assert guest_used(g) == 1 * GiB
    plain = make_guest(max_bytes=4 * GiB, target=2 * GiB, used=1 * GiB, autodeflate=False)
    assert guest_used(plain) == 1 * GiB
    assert guest_used(make_guest(used=None)) is None


def test_growth_is_immediate_and_unlimited() -> None:
    g = make_guest(target=1 * GiB, used=900 * MiB)
    plan, _ = decide(make_host(g), {}, PolicyState(), T)
    (action,) = plan.actions
    assert action.direction == "grow"
    assert action.new_target == want_of(900 * MiB)
    assert action.reason == "demand"


def test_idle_guest_shrinks_gradually_then_stops_at_want() -> None:
    snaps = []
    target = 4 * GiB
    state = PolicyState()
    history = []
    for i in range(200):
        snap = make_host(make_guest(target=target, used=500 * MiB, time=2.0 * i), time=2.0 * i)
        plan, state = decide(snap, {}, state, T)
        for a in plan.actions:
            assert a.direction == "shrink"
            step = target - a.new_target
            assert step <= max(T.shrink_min_step_bytes, int(4 * GiB * T.shrink_rate_per_s * 2)) + MiB
            target = a.new_target
        history.append(target)
        snaps.append(snap)
    assert history[0] < 4 * GiB  # it starts shrinking at once...
    assert history[0] > 3 * GiB  # ...but not all the way
    assert abs(history[-1] - want_of(500 * MiB)) <= max(T.shrink_dead_band_bytes, int(0.02 * 4 * GiB))
    assert history[-1] >= want_of(500 * MiB)


def test_no_flapping_on_noisy_use() -> None:
    """Noise in ``used`` may lift the target once (growth is never refused) but never moves it back down."""
    target = want_of(1 * GiB) + 8 * MiB
    state = PolicyState()
    directions = []
    for i in range(40):
        used = 1 * GiB + (i % 2) * 4 * MiB
        snap = make_host(make_guest(target=target, used=used, time=2.0 * i), time=2.0 * i)
        plan, state = decide(snap, {}, state, T)
        for a in plan.actions:
            directions.append(a.direction)
            target = a.new_target
    assert "shrink" not in directions
    assert len(directions) <= 1


def test_demand_rises_at_once_and_decays_slowly() -> None:
    s1 = make_host(make_guest(target=3 * GiB, used=2 * GiB, time=0), time=0)
    s2 = make_host(make_guest(target=3 * GiB, used=500 * MiB, time=2), time=2)
    _, state = run([s1, s2])
    demand = state.vms["vm"].demand
    assert demand is not None
    assert demand > 1900 * MiB  # 2 s later it has barely decayed
    assert demand < 2 * GiB


def test_rising_use_is_projected_ahead() -> None:
    snaps = [
        make_host(make_guest(target=2 * GiB, used=1 * GiB + i * 50 * MiB, time=float(i)), time=float(i))
        for i in range(2)
    ]
    _, state = run(snaps)
    demand = state.vms["vm"].demand
    assert demand == 1 * GiB + 50 * MiB + int(50 * MiB * T.trend_lookahead_s)


def test_swap_in_raises_demand_and_marks_pressure() -> None:
    snaps = [
        make_host(make_guest(target=1200 * MiB, used=1 * GiB, swap_in=0, time=0), time=0),
        make_host(make_guest(target=1200 * MiB, used=1 * GiB, swap_in=64 * MiB, time=2), time=2),
    ]
    plans, state = run(snaps)
    mem = state.vms["vm"]
    assert mem.pressure
    assert mem.demand is not None and mem.demand >= 1 * GiB + 64 * MiB + int(
        4 * GiB * T.pressure_boost_fraction
    )
    assert plans[1].actions and plans[1].actions[0].reason == "pressure"


def test_want_clamped_to_policy_floor_and_max() -> None:
    pol = GuestPolicy(min_bytes=2 * GiB, max_bytes=3 * GiB)
    small = make_guest("small", target=4 * GiB, used=100 * MiB, policy=pol)
    big = make_guest("big", target=2900 * MiB, used=2800 * MiB, policy=pol)
    plan, state = decide(make_host(small, big), {}, PolicyState(), T)
    got = targets(plan, make_host(small, big))
    assert got["big"] == 3 * GiB  # demand above the policy max: max
    assert got["small"] == 3 * GiB  # above the policy max: clamped down at once
    assert state.vms["small"].want == 2 * GiB  # the floor


def test_policies_argument_wins_over_snapshot_policy() -> None:
    g = make_guest(target=1 * GiB, used=100 * MiB, policy=GuestPolicy(min_bytes=3 * GiB))
    plan, _ = decide(make_host(g), {"vm": GuestPolicy(min_bytes=2 * GiB)}, PolicyState(), T)
    assert plan.actions[0].new_target == 2 * GiB


def test_excluded_and_balloonless_guests_are_never_touched() -> None:
    a = make_guest("a", target=4 * GiB, used=100 * MiB, policy=GuestPolicy(exclude=True))
    b = make_guest("b", target=4 * GiB, used=100 * MiB, model="none")
    c = make_guest("c", target=4 * GiB, used=100 * MiB, state=VMState.SHUTOFF)
    plan, _ = decide(make_host(a, b, c), {}, PolicyState(), T)
    assert plan.actions == ()
    assert set(plan.status.values()) == {Status.EXCLUDED}


def test_budget_water_fill_by_shares_when_wants_do_not_fit() -> None:
    gold = make_guest("gold", target=3500 * MiB, used=3 * GiB, policy=GuestPolicy(shares=3000))
    bronze = make_guest("bronze", target=3500 * MiB, used=3 * GiB, policy=GuestPolicy(shares=1000))
    tun = replace(T, host_reserve_bytes=1 * GiB, host_budget_bytes=3 * GiB)
    snap = make_host(gold, bronze, available=8 * GiB)
    plan, state = decide(snap, {}, PolicyState(), tun)
    got = targets(plan, snap)
    assert plan.budget == 3 * GiB
    assert sum(got.values()) <= 3 * GiB
    floor = T.global_min_bytes
    assert got["gold"] - floor == pytest.approx(3 * (got["bronze"] - floor), rel=0.01)
    assert state.host_short
    assert {a.reason for a in plan.actions} == {"host-danger"}  # over budget now: cut at once


def test_surplus_taken_first_from_biggest_surplus() -> None:
    # Wants fit but the rate-limited (kept) targets do not: cut the largest surplus first.
    idle = make_guest("idle", target=4 * GiB, used=200 * MiB)
    busy = make_guest("busy", target=2304 * MiB, used=2 * GiB)
    tun = replace(T, host_reserve_bytes=0, host_budget_bytes=5 * GiB)
    snap = make_host(idle, busy)
    plan, _ = decide(snap, {}, PolicyState(), tun)
    got = targets(plan, snap)
    assert got["busy"] == want_of(2 * GiB)  # growth is not limited
    assert got["idle"] == 5 * GiB - want_of(2 * GiB)  # the idle one gives it, faster than its shrink rate
    assert got["idle"] > want_of(200 * MiB)  # but no further than the budget needs


def test_guest_under_pressure_not_shrunk_to_feed_another() -> None:
    low = 16 * MiB
    pressed = make_guest("pressed", max_bytes=4 * GiB, target=2 * GiB, used=2 * GiB - low)
    hungry = make_guest("hungry", max_bytes=8 * GiB, target=2 * GiB, used=6 * GiB)
    tun = replace(T, host_reserve_bytes=1 * GiB)
    snap = make_host(pressed, hungry, available=2 * GiB)  # budget 5 GiB: cannot hold both wants
    plan, state = decide(snap, {}, PolicyState(), tun)
    got = targets(plan, snap)
    assert state.vms["pressed"].pressure
    assert got["pressed"] >= 2 * GiB
    assert sum(got.values()) <= plan.budget  # type: ignore[operator]


def test_host_in_danger_may_shrink_guest_under_pressure() -> None:
    pressed = make_guest("pressed", max_bytes=4 * GiB, target=3 * GiB, used=3 * GiB - 16 * MiB)
    tun = replace(T, host_reserve_bytes=2 * GiB)
    snap = make_host(pressed, available=0)  # host below its reserve: budget 1 GiB
    plan, _ = decide(snap, {}, PolicyState(), tun)
    (action,) = plan.actions
    assert action.new_target <= 1 * GiB
    assert action.reason == "host-danger"


def test_autodeflate_self_deflation_is_adopted_not_fought() -> None:
    s1 = make_host(make_guest(max_bytes=512 * MiB, target=200 * MiB, used=60 * MiB, time=0), time=0)
    # The guest allocated 250 MiB at once and took balloon pages back: actual rose by itself.
    s2 = make_host(
        make_guest(max_bytes=512 * MiB, target=200 * MiB, actual=400 * MiB, used=310 * MiB, time=2), time=2
    )
    plans, state = run([s1, s2])
    (action,) = plans[1].actions
    assert action.reason == "autodeflate"
    assert action.new_target >= 400 * MiB
    assert state.vms["vm"].pressure


def test_warns_once_about_managed_guests_without_autodeflate() -> None:
    snaps = [make_host(make_guest(autodeflate=False, time=float(i)), time=float(i)) for i in range(3)]
    plans, _ = run(snaps)
    assert any("autodeflate" in e and "warning" in e for e in plans[0].events)
    assert not any("autodeflate" in e for e in plans[1].events + plans[2].events)


def test_water_fill_shares_and_caps() -> None:
    assert water_fill([0, 0], [100, 100], [1.0, 1.0], 50) == [25, 25]
    assert water_fill([0, 0], [10, 100], [1.0, 1.0], 50) == [10, 40]
    assert water_fill([5, 5], [100, 100], [3.0, 1.0], 40) == [35, 15]
    assert water_fill([0, 0], [10, 10], [1.0, 1.0], 100) == [10, 10]
    assert sum(water_fill([0, 0, 0], [7, 7, 7], [1.0, 1.0, 1.0], 10)) <= 10
