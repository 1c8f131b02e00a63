"""Properties of the default policy for any snapshot (hypothesis). Its speed is a benchmark figure
(bench/bench_policy.py), not a timed test: a shared CI machine cannot make a timing assertion fair."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from autoballoon import safety
from autoballoon.model import (
    BalloonConfig,
    GuestPolicy,
    GuestSnapshot,
    GuestStats,
    HostSnapshot,
    Status,
    VMState,
)
from autoballoon.policy import Inputs, PolicyState, decide, host_reserve
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB
from tests.helpers import make_guest, make_host, targets

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
    # Policy sizes from the lowest target anybody may set (128 MiB); shares from 1 (see constraints.py).
    pmin = draw(st.one_of(st.none(), st.integers(128, 16 * 1024).map(lambda m: m * MiB)))
    pmax = draw(st.one_of(st.none(), st.integers(128, 16 * 1024).map(lambda m: m * MiB)))
    policy = GuestPolicy(
        min_bytes=pmin,
        max_bytes=pmax,
        shares=draw(st.one_of(st.none(), st.integers(1, 5000))),
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
    plan, state = decide(snap, Inputs(), PolicyState(), tunables)
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
        floor, ceiling = safety.limits(g, g.policy, tunables)
        assert floor <= a.new_target <= ceiling, a
        assert a.new_target <= g.max_bytes


@SETTINGS
@given(hosts())
def test_sum_of_targets_within_budget_when_oom_floors_fit(case: tuple[HostSnapshot, Tunables]) -> None:
    """The budget holds whenever it can hold every guest's OOM floor (beyond that, a process killed in
    a guest is a worse harm than a host above its budget)."""
    snap, tunables = case
    plan, _, final = outcome(snap, tunables)
    assert plan.budget is not None
    oom_floors = 0
    managed_targets = 0
    held = 0
    for g in snap.guests:
        status = plan.status[g.name]
        if status == Status.EXCLUDED:
            continue
        if status == Status.MANAGED:
            oom_floors += plan.guests[g.name].oom_floor or 0
            managed_targets += final[g.name]
        else:
            held += max(final[g.name], g.actual_bytes or 0)
    if oom_floors + held <= plan.budget:
        assert managed_targets + held <= plan.budget


@SETTINGS
@given(hosts())
def test_new_growth_is_paid_from_free_memory(case: tuple[HostSnapshot, Tunables]) -> None:
    """A balloon that shrinks gives its memory back slowly: while it does, the host holds
    ``max(actual, target)`` of every VM, so growth granted now (beyond targets, balloons and floors)
    must fit beside that, whenever the host holds what it has now (squeezed's two-phase rule). Growth
    up to a guest's OOM floor may also take the host's reserve, all but its last free MiB."""
    snap, tunables = case
    tunables = replace(tunables, host_budget_bytes=None)  # the rule is about the host's own memory
    plan, _, final = outcome(snap, tunables)
    assert plan.budget is not None and plan.reserve is not None
    all_it_has = plan.budget + max(0, plan.reserve - tunables.host_min_free_bytes)
    transient = 0
    now_held = 0
    held = 0
    grew = False
    for g in snap.guests:
        status = plan.status[g.name]
        actual = g.actual_bytes or 0
        if status == Status.MANAGED:
            floor = safety.limits(g, g.policy, tunables)[0]
            transient += max(final[g.name], actual)
            now_held += max(actual, floor)
            grew = grew or final[g.name] > max(g.target_bytes, actual, floor)
        elif status != Status.EXCLUDED:
            held += max(final[g.name], actual)
    if grew and now_held + held <= plan.budget:
        assert transient + held <= all_it_has


@SETTINGS
@given(hosts())
def test_guest_under_pressure_is_shrunk_only_when_host_in_danger(case: tuple[HostSnapshot, Tunables]) -> None:
    snap, tunables = case
    plan, _, _ = outcome(snap, tunables)
    for a in plan.actions:
        if a.direction == "shrink" and plan.guests[a.vm].pressure:
            g = snap.guest(a.vm)
            assert g is not None
            ceiling = safety.limits(g, g.policy, tunables)[1]
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
    """With room on the host, every managed guest that wants more gets all it wants in one decision"""
    snap, tunables = case
    roomy = replace(snap, mem_available=1024 * GiB)
    tunables = replace(tunables, host_budget_bytes=None, host_reserve_bytes=0)
    plan, _, final = outcome(roomy, tunables)
    for g in roomy.guests:
        want = plan.guests[g.name].want
        if plan.status[g.name] == Status.MANAGED and want is not None and want > g.target_bytes:
            assert final[g.name] >= want or want - g.target_bytes < tunables.grow_min_step_bytes


def test_reserve_rule() -> None:
    snap = HostSnapshot(time=0, wall_time=0, mem_total=100 * GiB, mem_available=0)
    assert host_reserve(snap, T) == 5 * GiB
    assert host_reserve(replace(snap, mem_total=1 * GiB), T) == T.reserve_bytes
    assert host_reserve(snap, replace(T, host_reserve_bytes=7)) == 7


class PolicyOverTime(RuleBasedStateMachine):
    """The policy over many ticks of a host whose guests allocate, free, stall their balloons and stop
    reporting at random, with its own targets applied each tick (the balloon moving part of the way).
    After every decision: every target within ``[floor, max]``, no guest without fresh stats shrunk,
    and on a host with room, every managed guest that wants more gets all of it at once."""

    def __init__(self) -> None:
        super().__init__()
        self.time = 0.0
        self.state = PolicyState()
        self.guests: dict[str, GuestSnapshot] = {}
        self.roomy = True

    @initialize(count=st.integers(1, 5), data=st.data())
    def boot(self, count: int, data: st.DataObject) -> None:
        for i in range(count):
            max_bytes = data.draw(st.integers(256, 8192)) * MiB
            self.guests[f"vm{i}"] = make_guest(
                f"vm{i}",
                max_bytes=max_bytes,
                used=data.draw(st.integers(32, max_bytes // MiB // 2)) * MiB,
                autodeflate=data.draw(st.booleans()),
                time=0.0,
            )

    @rule(name=st.sampled_from(["vm0", "vm1", "vm2", "vm3", "vm4"]), mib=st.integers(-2048, 2048))
    def allocate(self, name: str, mib: int) -> None:
        g = self.guests.get(name)
        if g is None or g.used_bytes is None:
            return
        used = min(max(16 * MiB, g.used_bytes + mib * MiB), g.max_bytes)
        self.guests[name] = self._guest(g, used=used, fresh=True)

    @rule(name=st.sampled_from(["vm0", "vm1", "vm2", "vm3", "vm4"]))
    def stop_reporting(self, name: str) -> None:
        g = self.guests.get(name)
        if g is not None:
            self.guests[name] = replace(g, stats=GuestStats())

    @rule(roomy=st.booleans())
    def host_room(self, roomy: bool) -> None:
        self.roomy = roomy

    @rule(seconds=st.floats(0.5, 60.0), share=st.floats(0.0, 1.0))
    def tick(self, seconds: float, share: float) -> None:
        self.time += seconds
        guests = {n: self._guest(g, fresh=g.stats.present) for n, g in self.guests.items()}
        available = 256 * GiB if self.roomy else 1 * GiB
        snap = make_host(*guests.values(), time=self.time, available=available)
        t = replace(T, host_reserve_bytes=0)
        plan, self.state = decide(snap, Inputs(), self.state, t)
        for a in plan.actions:
            g = guests[a.vm]
            floor, ceiling = safety.limits(g, g.policy, t)
            assert floor <= a.new_target <= ceiling <= g.max_bytes, a
            if a.direction == "shrink":
                assert plan.status[a.vm] == Status.MANAGED, (a, plan.status_reason[a.vm])
                assert safety.hold_reason(g, snap.wall_time, t) is None
        if self.roomy:
            final = targets(plan, snap)
            for g in guests.values():
                want = plan.guests[g.name].want
                if plan.status[g.name] == Status.MANAGED and want is not None and want > g.target_bytes:
                    assert final[g.name] >= want or want - g.target_bytes < t.grow_min_step_bytes
        for a in plan.actions:  # the balloon moves part of the way toward its new target
            g = guests[a.vm]
            actual = g.actual_bytes or a.new_target
            moved = actual + int((a.new_target - actual) * share)
            guests[a.vm] = replace(g, target_bytes=a.new_target, actual_bytes=moved)
        self.guests = guests

    def _guest(self, g: GuestSnapshot, *, used: int | None = None, fresh: bool) -> GuestSnapshot:
        """``g`` now: its stats stamped now if it reports, or ageing if it stopped."""
        if not fresh:
            return g
        used = g.used_bytes if used is None else used
        return make_guest(
            g.name,
            max_bytes=g.max_bytes,
            target=g.target_bytes,
            actual=g.actual_bytes,
            used=min(used or 0, g.actual_bytes or g.max_bytes) if not g.balloon.autodeflate else used,
            autodeflate=g.balloon.autodeflate,
            time=self.time,
        )


TestPolicyOverTime = PolicyOverTime.TestCase
TestPolicyOverTime.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
