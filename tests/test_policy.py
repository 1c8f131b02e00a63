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
from autoballoon.policy import PolicyState, decide, roominess, water_fill
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

#: Without the roomy host's spare cushion, which has tests of its own below: these pin the buffer's mechanics.
T = Tunables(roomy_buffer=0.0)
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
    assert g.used_bytes == 1 * GiB
    plain = make_guest(max_bytes=4 * GiB, target=2 * GiB, used=1 * GiB, autodeflate=False)
    assert plain.used_bytes == 1 * GiB
    assert make_guest(used=None).used_bytes is None


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
    # Wants fit but the rate-limited (kept) targets do not: cut the largest surplus first. The host has
    # the memory (the budget is a configured cap), so the busy guest grows at once.
    idle = make_guest("idle", target=4 * GiB, used=200 * MiB)
    busy = make_guest("busy", target=2304 * MiB, used=2560 * MiB)
    tun = replace(T, host_reserve_bytes=0, host_budget_bytes=5 * GiB)
    snap = make_host(idle, busy)
    plan, state = decide(snap, {}, PolicyState(), tun)
    got = targets(plan, snap)
    busy_want, idle_want = state.vms["busy"].want, state.vms["idle"].want
    assert busy_want is not None and idle_want is not None
    assert got["busy"] == busy_want > 2304 * MiB  # growth is not limited
    assert got["idle"] == 5 * GiB - busy_want  # the idle one gives it, faster than its shrink rate
    assert got["idle"] > idle_want  # but no further than the budget needs


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
    # what it took back, plus a boost: it ran past its swap and still swaps what did not fit
    assert action.new_target >= min(512 * MiB, 400 * MiB + int(512 * MiB * T.self_deflate_boost_fraction))
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


# --- cushions scale with how roomy the host is ------------------------------------------------------

ROOMY = Tunables()  # with the spare


def test_roominess_from_short_to_roomy() -> None:
    gib = GiB
    assert roominess(10 * gib, 20 * gib, 20 * gib, ROOMY) == 1.0  # could hold every guest at max
    assert roominess(10 * gib, 20 * gib, 30 * gib, ROOMY) == 1.0
    assert roominess(10 * gib, 20 * gib, 15 * gib, ROOMY) == 0.0  # rho 0.5 = roomy_from: no cushion
    half = 10 * gib + int(0.75 * 10 * gib)  # rho 0.75: half way between roomy_from and 1
    assert roominess(10 * gib, 20 * gib, half, ROOMY) == pytest.approx(0.5)
    assert roominess(10 * gib, 10 * gib, 9 * gib, ROOMY) == 0.0  # every guest at max already: short


def test_roomy_host_keeps_a_spare_for_a_first_burst() -> None:
    g = make_guest(max_bytes=8 * GiB, target=1 * GiB, used=1 * GiB)
    plan, state = decide(make_host(g), {}, PolicyState(), ROOMY)
    want = state.vms["vm"].want
    assert want == want_of(1 * GiB)  # the buffer is the full one...
    spare = min(ROOMY.roomy_buffer * GiB, ROOMY.roomy_gap * (8 * GiB - want))
    assert plan.actions[0].new_target == want + int(spare) // MiB * MiB  # ...plus the spare


def test_over_committed_host_keeps_guests_near_demand() -> None:
    # Eight 8 GiB guests using 1 GiB each on a host whose budget holds about 12 GiB of them: rho < 0.5.
    guests = [make_guest(f"vm{i}", max_bytes=8 * GiB, target=1536 * MiB, used=1 * GiB) for i in range(8)]
    tun = replace(ROOMY, host_reserve_bytes=0, host_budget_bytes=12 * GiB)
    snap = make_host(*guests)
    _, state = decide(snap, {}, PolicyState(), tun)
    thin = -(-(int(1 * GiB * (1 + tun.buffer_short)) + tun.min_headroom_bytes) // MiB) * MiB
    assert all(state.vms[g.name].want == thin for g in guests)  # buffer_short, no spare
    assert not state.host_short


def test_short_host_cuts_cushions_before_anyone_goes_below_need() -> None:
    # Wants (their own 20 % buffers) do not fit, needs do: every guest keeps at least demand + headroom.
    pol = GuestPolicy(buffer=0.2)
    a = make_guest("a", max_bytes=4 * GiB, target=4 * GiB, used=3 * GiB, policy=pol)
    b = make_guest("b", max_bytes=4 * GiB, target=4 * GiB, used=3 * GiB, policy=pol)
    tun = replace(T, host_reserve_bytes=0, host_budget_bytes=7 * GiB)
    snap = make_host(a, b)
    plan, state = decide(snap, {}, PolicyState(), tun)
    got = targets(plan, snap)
    need = 3 * GiB + T.min_headroom_bytes
    assert state.host_short
    assert sum(got.values()) <= 7 * GiB
    assert all(need <= got[n] < state.vms[n].want for n in ("a", "b")), got  # type: ignore[operator]


def test_growth_waits_for_memory_a_shrinking_balloon_still_holds() -> None:
    # "idle" was told to shrink to 1 GiB but its balloon is still at 6 GiB (inflation is slow): the host
    # has 1 GiB free beyond its reserve, so "hungry" (swapping: it wants 2 GiB more) gets that now and
    # the rest once the memory is back, never more than the host has.
    tun = replace(T, host_reserve_bytes=1 * GiB)

    def snap(time: float, swap_in: int) -> HostSnapshot:
        idle = make_guest(
            "idle", max_bytes=8 * GiB, target=1 * GiB, actual=6 * GiB, used=512 * MiB, time=time
        )
        hungry = make_guest(
            "hungry", max_bytes=8 * GiB, target=2 * GiB, used=2 * GiB, swap_in=swap_in, time=time
        )
        return make_host(idle, hungry, available=2 * GiB, time=time)

    _, state = decide(snap(0, 0), {}, PolicyState(), tun)
    later = snap(2, 1 * GiB)
    plan, state = decide(later, {}, state, tun)
    got = targets(plan, later)
    want = state.vms["hungry"].want
    assert state.vms["hungry"].pressure and want is not None and want > 3 * GiB
    assert got["hungry"] == 3 * GiB  # all that is free now, at once
    assert got["idle"] <= 1 * GiB  # and the idle one keeps shrinking
