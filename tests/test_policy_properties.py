"""Properties of the default policy for any snapshot (hypothesis), and its speed at 1,000 guests."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoballoon import guards
from autoballoon.guards import Status
from autoballoon.model import BalloonConfig, GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, VMState
from autoballoon.policy import PolicyState, decide, host_reserve
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

T = Tunables()


@st.composite
def guests(draw: st.DrawFn, name: str) -> GuestSnapshot:
    max_bytes = draw(st.integers(64, 16 * 1024)) * MiB
    target = draw(st.integers(0, max_bytes // MiB)) * MiB
    actual = draw(st.integers(0, max_bytes // MiB)) * MiB
    autodeflate = draw(st.booleans())
    has_stats = draw(st.integers(0, 9)) > 0
    stats = GuestStats()
    if has_stats:
        total = max_bytes if autodeflate else actual
        used = draw(st.integers(0, max(0, actual // MiB))) * MiB
        available = max(0, total - used - (max_bytes - actual if autodeflate else 0))
        stats = GuestStats(total=total, available=available, swap_in=0, major_faults=0, last_update=1000.0)
    pmin = draw(st.one_of(st.none(), st.integers(0, 16 * 1024).map(lambda m: m * MiB)))
    pmax = draw(st.one_of(st.none(), st.integers(0, 16 * 1024).map(lambda m: m * MiB)))
    policy = GuestPolicy(
        min_bytes=pmin,
        max_bytes=pmax,
        shares=draw(st.one_of(st.none(), st.integers(0, 5000))),
        buffer=draw(st.one_of(st.none(), st.floats(0, 1))),
        exclude=draw(st.integers(0, 19)) == 0,
    )
    return GuestSnapshot(
        name=name,
        state=VMState.RUNNING,
        max_bytes=max_bytes,
        target_bytes=target,
        actual_bytes=actual,
        stats=stats,
        balloon=BalloonConfig(autodeflate=autodeflate, stats_period=1),
        policy=policy,
    )


@st.composite
def hosts(draw: st.DrawFn) -> tuple[HostSnapshot, Tunables]:
    n = draw(st.integers(1, 8))
    gs = tuple(draw(guests(f"vm{i}")) for i in range(n))
    snap = HostSnapshot(
        time=0.0,
        wall_time=1000.0,
        mem_total=64 * GiB,
        mem_available=draw(st.integers(0, 64 * 1024)) * MiB,
        guests=gs,
    )
    tunables = replace(
        T,
        host_reserve_bytes=draw(st.one_of(st.none(), st.integers(0, 4096).map(lambda m: m * MiB))),
        host_budget_bytes=draw(st.one_of(st.none(), st.integers(0, 64 * 1024).map(lambda m: m * MiB))),
    )
    return snap, tunables


def outcome(snap: HostSnapshot, tunables: Tunables):  # type: ignore[no-untyped-def]
    plan, state = decide(snap, {}, PolicyState(), tunables)
    final = {g.name: g.target_bytes for g in snap.guests}
    final.update({a.vm: a.new_target for a in plan.actions})
    return plan, state, final


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(hosts())
def test_no_target_above_max_or_below_floor(case: tuple[HostSnapshot, Tunables]) -> None:
    snap, tunables = case
    plan, _, _ = outcome(snap, tunables)
    for a in plan.actions:
        g = snap.guest(a.vm)
        assert g is not None
        floor, ceiling = guards.limits(g, g.policy, tunables)
        assert floor <= a.new_target <= ceiling, a
        assert a.new_target <= g.max_bytes


@SETTINGS
@given(hosts())
def test_sum_of_targets_within_budget_when_floors_fit(case: tuple[HostSnapshot, Tunables]) -> None:
    snap, tunables = case
    plan, _, final = outcome(snap, tunables)
    assert plan.budget is not None
    managed_floors = 0
    managed_targets = 0
    held = 0
    for g in snap.guests:
        status = plan.status[g.name]
        if status == Status.EXCLUDED:
            continue
        if status == Status.MANAGED:
            managed_floors += guards.limits(g, g.policy, tunables)[0]
            managed_targets += final[g.name]
        else:
            held += max(final[g.name], g.actual_bytes or 0)
    if managed_floors + held <= plan.budget:
        assert managed_targets + held <= plan.budget


@SETTINGS
@given(hosts())
def test_guest_under_pressure_is_shrunk_only_when_host_in_danger(case: tuple[HostSnapshot, Tunables]) -> None:
    snap, tunables = case
    plan, state, _ = outcome(snap, tunables)
    for a in plan.actions:
        if a.direction == "shrink" and state.vms[a.vm].pressure:
            g = snap.guest(a.vm)
            assert g is not None
            ceiling = guards.limits(g, g.policy, tunables)[1]
            assert a.reason == "host-danger" or (a.reason == "max" and g.target_bytes > ceiling), a


@SETTINGS
@given(hosts())
def test_stats_less_guest_never_shrunk(case: tuple[HostSnapshot, Tunables]) -> None:
    snap, tunables = case
    plan, _, _ = outcome(snap, tunables)
    for a in plan.actions:
        if plan.status[a.vm] == Status.NO_STATS:
            assert a.direction == "grow"


@SETTINGS
@given(hosts())
def test_growth_is_never_rate_limited(case: tuple[HostSnapshot, Tunables]) -> None:
    """With room on the host, every managed guest that wants more gets all it wants in one decision."""
    snap, tunables = case
    roomy = replace(snap, mem_available=1024 * GiB)
    tunables = replace(tunables, host_budget_bytes=None, host_reserve_bytes=0)
    plan, state, final = outcome(roomy, tunables)
    for g in roomy.guests:
        mem = state.vms[g.name]
        if plan.status[g.name] == Status.MANAGED and mem.want is not None and mem.want > g.target_bytes:
            assert final[g.name] == mem.want or mem.want - g.target_bytes < tunables.grow_min_step_bytes


def test_reserve_rule() -> None:
    snap = HostSnapshot(time=0, wall_time=0, mem_total=100 * GiB, mem_available=0)
    assert host_reserve(snap, T) == 5 * GiB
    assert host_reserve(replace(snap, mem_total=1 * GiB), T) == T.reserve_bytes
    assert host_reserve(snap, replace(T, host_reserve_bytes=7)) == 7


def _fleet(n: int, rng: random.Random) -> list[GuestSnapshot]:
    out = []
    for i in range(n):
        mx = rng.choice([1, 2, 4, 8]) * GiB
        out.append(
            GuestSnapshot(
                name=f"vm{i:04d}",
                state=VMState.RUNNING,
                max_bytes=mx,
                target_bytes=mx,
                actual_bytes=mx,
                balloon=BalloonConfig(autodeflate=bool(i % 2), stats_period=1),
            )
        )
    return out


def test_decision_time_at_1000_guests() -> None:
    """1,000 guests with drifting demand, targets applied as a backend would: median under 10 ms of CPU.

    The first ticks shrink every guest (the slowest case: an action and a budget cut per guest)."""
    rng = random.Random(7)
    fleet = _fleet(1000, rng)
    used = [rng.randint(10, 80) * g.max_bytes // 100 for g in fleet]
    state = PolicyState()
    durations = []
    for tick in range(40):
        now = 2.0 * tick
        gs = []
        for i, g in enumerate(fleet):
            used[i] = max(64 * MiB, min(g.actual_bytes or 0, used[i] + rng.randint(-8, 8) * MiB))
            total = g.max_bytes if g.balloon.autodeflate else g.actual_bytes or 0
            hidden = g.max_bytes - (g.actual_bytes or 0) if g.balloon.autodeflate else 0
            stats = GuestStats(
                total=total,
                available=max(0, total - used[i] - hidden),
                swap_in=0,
                major_faults=0,
                last_update=1000.0 + now,
            )
            gs.append(replace(g, stats=stats))
        snap = HostSnapshot(
            time=now, wall_time=1000.0 + now, mem_total=8192 * GiB, mem_available=2048 * GiB, guests=tuple(gs)
        )
        started = time.process_time()
        plan, state = decide(snap, {}, state, T)
        durations.append(time.process_time() - started)
        changes = {a.vm: a.new_target for a in plan.actions}
        fleet = [
            replace(g, target_bytes=changes[g.name], actual_bytes=changes[g.name]) if g.name in changes else g
            for g in gs
        ]
    median = statistics.median(durations[1:])
    print(f"decide() at 1000 guests: median {median * 1e3:.2f} ms, max {max(durations) * 1e3:.2f} ms")
    assert median < 0.010
