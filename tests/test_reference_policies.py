"""The reference policies do what their published descriptions say (oVirt MOM, Proxmox VE), and the
static and oracle policies hold their definitions. These pin behaviour, so a "fix" that drifts from the
published algorithm fails here."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from autoballoon.constraints import MIN_TARGET_BYTES
from autoballoon.evaluate.policies import DaemonPolicy, Oracle, factory, oracle_headroom, oracle_targets
from autoballoon.evaluate.runner import Job, run_simulation
from autoballoon.health import HealthState, Quarantine
from autoballoon.model import GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, VMState
from autoballoon.policy import Inputs, mom, proxmox
from autoballoon.policy.reference import MomPolicy, ProxmoxPolicy, StaticPolicy, budget_view
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import loads_scenario
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB


def guest(
    name: str,
    *,
    max_b: int = 8 * GiB,
    actual: int = 8 * GiB,
    free: int | None = 1 * GiB,
    min_b: int | None = 1 * GiB,
    shares: int | None = None,
    exclude: bool = False,
) -> GuestSnapshot:
    stats = GuestStats()
    if free is not None:
        stats = GuestStats(total=actual, available=free + 256 * MiB, free=free, last_update=1.0)
    return GuestSnapshot(
        name=name,
        state=VMState.RUNNING,
        max_bytes=max_b,
        target_bytes=actual,
        actual_bytes=actual,
        stats=stats,
        policy=GuestPolicy(min_bytes=min_b, shares=shares, exclude=exclude),
    )


def host(available: int, *guests: GuestSnapshot, total: int = 64 * GiB) -> HostSnapshot:
    return HostSnapshot(time=0.0, wall_time=1.0, mem_total=total, mem_available=available, guests=guests)


# --- MOM -------------------------------------------------------------------------------------------


def mom_decide(snap: HostSnapshot, samples: int = 1) -> dict[str, int]:
    state = mom.MomState()
    for _ in range(samples):
        state = mom.observe(state, snap)
    return mom.decide(state, snap)


def test_mom_grows_everyone_by_five_percent_when_the_host_has_room() -> None:
    g = guest("a", actual=4 * GiB, free=3 * GiB)
    out = mom_decide(host(40 * GiB, g))
    assert out == {"a": int(4 * GiB * 1.05)}  # +5 % even though the guest has plenty free


def test_mom_shrinks_everyone_by_at_most_five_percent_when_the_host_is_short() -> None:
    g = guest("a", actual=4 * GiB, free=3 * GiB, min_b=None)
    out = mom_decide(host(int(64 * GiB * 0.10), g))  # 10 % free < 20 % threshold
    assert out == {"a": int(4 * GiB * 0.95)}


def test_mom_shrink_stops_at_used_plus_scaled_free_and_at_balloon_min() -> None:
    # 10 % host free: guest free percent = 0.20 * 0.10 / 0.20 = 0.10; used = 4G - 0.5G
    g = guest("a", actual=4 * GiB, free=512 * MiB, min_b=None)
    out = mom_decide(host(int(64 * GiB * 0.10), g))
    floor = 4 * GiB - 512 * MiB + 0.10 * 4 * GiB
    assert floor > 4 * GiB * 0.95
    assert out["a"] == int(floor)
    no_room = guest("c", actual=4 * GiB, free=300 * MiB, min_b=None)  # floor above its size: untouched
    assert mom_decide(host(int(64 * GiB * 0.10), no_room)) == {}
    pinned = guest("b", actual=4 * GiB, free=3 * GiB, min_b=int(3.9 * GiB))
    assert mom_decide(host(int(64 * GiB * 0.10), pinned)) == {"b": int(3.9 * GiB)}


def test_mom_critical_host_pressure_forces_guests_below_their_use() -> None:
    g = guest("a", actual=4 * GiB, free=0, min_b=None)
    out = mom_decide(host(int(64 * GiB * 0.02), g))  # 2 % free <= 5 % critical
    assert out["a"] < 4 * GiB  # guest free percent is negative: it is pushed to swap


def test_mom_skips_guests_without_stats_and_tiny_changes() -> None:
    assert mom_decide(host(40 * GiB, guest("a", free=None))) == {}
    at_max = guest("b", actual=8 * GiB - 10 * MiB, max_b=8 * GiB)  # +5 % capped at max: 10 MiB < 0.25 %
    assert mom_decide(host(40 * GiB, at_max)) == {}


def test_mom_averages_the_last_ten_samples() -> None:
    state = mom.MomState()
    for free in range(20):
        state = mom.observe(state, host(free * GiB, guest("a", free=free * MiB)))
    assert list(state.host_free) == [f * GiB for f in range(10, 20)]
    assert list(state.mem_unused["a"]) == [f * MiB for f in range(10, 20)]


def test_mom_policy_decides_on_every_second_sample() -> None:
    policy = MomPolicy(Tunables())
    snap = host(40 * GiB, guest("a", actual=4 * GiB))
    assert policy.interval_s == 5.0
    plan, state = policy.decide(snap, Inputs(), policy.initial_state())
    assert plan.actions == ()
    plan, state = policy.decide(snap, Inputs(), state)
    assert [(a.vm, a.new_target, a.reason) for a in plan.actions] == [("a", int(4 * GiB * 1.05), "mom-grow")]


def test_reference_policies_obey_the_daemon_rules() -> None:
    """Whatever their algorithm says: no shrink without fresh stats, a quarantined VM goes to its ceiling,
    no target below the floor."""
    tun = Tunables()
    stale = guest("stale", actual=8 * GiB, free=7 * GiB)
    squeezed = guest("squeezed", actual=200 * MiB, max_b=8 * GiB, free=150 * MiB, min_b=None)
    sick = guest("sick", actual=2 * GiB, free=1 * GiB)
    snap = host(1 * GiB, stale, squeezed, sick)  # MOM: host short, shrink everyone
    snap = HostSnapshot(
        time=0.0, wall_time=1.0 + 2 * tun.stats_stale_s, mem_total=64 * GiB, mem_available=1 * GiB,
        guests=(stale, squeezed, sick),
    )  # fmt: skip
    health = HealthState(quarantined={"sick": Quarantine(0.0, None, "CPU storm")})
    for policy in (MomPolicy(tun), ProxmoxPolicy(tun)):
        state = policy.initial_state()
        for _ in range(2):
            plan, state = policy.decide(snap, Inputs(health=health), state)
        moves = {a.vm: a for a in plan.actions}
        assert "stale" not in moves or moves["stale"].direction == "grow", (policy.name, moves)
        assert moves["sick"].new_target == 8 * GiB and moves["sick"].reason == "quarantine"
        assert plan.status["stale"] == "no-stats" and plan.status["sick"] == "quarantined"
        assert all(a.new_target >= tun.global_min_bytes for a in plan.actions)


def test_with_a_budget_reference_policies_see_the_budget_as_their_host() -> None:
    tun = Tunables(host_budget_bytes=3 * GiB, host_reserve_bytes=0)
    snap = host(40 * GiB, guest("a", actual=1 * GiB), guest("b", actual=1 * GiB))
    view = budget_view(snap, Inputs(), tun)
    assert (view.mem_total, view.mem_available) == (3 * GiB, 1 * GiB)
    # Proxmox aims at 80 % of that host (2.4 GiB used), so it gives 0.4 GiB, 100 MiB per VM per cycle
    plan, _ = ProxmoxPolicy(tun).decide(snap, Inputs(), None)
    assert [a.new_target - a.old_target for a in plan.actions] == [100 * MiB, 100 * MiB]
    big = Tunables(host_budget_bytes=5 * GiB, host_reserve_bytes=0)
    plan, _ = ProxmoxPolicy(big).decide(snap, Inputs(), None)  # aims at 4 GiB: 2 GiB to give
    assert [a.new_target - a.old_target for a in plan.actions] == [100 * MiB, 100 * MiB]


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.0, 1.0),
    st.lists(
        st.tuples(st.integers(256, 16384), st.floats(0.0, 1.0), st.integers(0, 16384), st.integers(0, 2)),
        min_size=1,
        max_size=6,
    ),
)
def test_mom_never_moves_a_balloon_more_than_five_percent_per_tick(
    host_free: float, specs: list[tuple[int, float, int, int]]
) -> None:
    guests = []
    for i, (actual_mib, free_frac, min_mib, extra) in enumerate(specs):
        actual = actual_mib * MiB
        guests.append(
            guest(
                f"g{i}",
                max_b=actual + extra * GiB,
                actual=actual,
                free=int(actual * free_frac),
                min_b=min(min_mib * MiB, actual) if min(min_mib * MiB, actual) >= MIN_TARGET_BYTES else None,
            )
        )
    snap = host(int(64 * GiB * host_free), *guests)
    for name, new in mom_decide(snap, samples=3).items():
        cur = snap.guest(name).actual_bytes  # type: ignore[union-attr]
        assert abs(new - cur) <= 0.05 * cur + 1


# --- Proxmox ---------------------------------------------------------------------------------------


def test_proxmox_goal_is_eighty_percent_of_ram_minus_used() -> None:
    snap = host(30 * GiB, total=100 * GiB)  # used 70 G, target 80 G
    assert proxmox.host_goal(snap) == 10 * GiB


def test_proxmox_skips_vms_without_balloon_min_or_excluded() -> None:
    # Proxmox's "shares: 0" (not auto-ballooned) is autoballoon's exclude: a policy's shares are 1 or more.
    snap = host(
        1 * GiB,
        guest("nomin", min_b=None),
        guest("zero", exclude=True),
        guest("ok"),
        total=64 * GiB,
    )
    assert [v.name for v in proxmox.candidates(snap)] == ["ok"]
    out = proxmox.decide(snap)
    assert set(out) <= {"ok"} and out  # the host is short: only "ok" is shrunk


def test_proxmox_dead_band_ten_mib() -> None:
    vms = proxmox.candidates(host(1 * GiB, guest("a")))
    assert proxmox.compute(vms, 10 * MiB) == {}
    assert proxmox.compute(vms, -10 * MiB) == {}


def test_proxmox_gives_first_to_guests_short_of_free_memory() -> None:
    short = guest("short", actual=4 * GiB, free=100 * MiB)  # free < 25 % of balloon_min
    rich = guest("rich", actual=4 * GiB, free=3 * GiB)
    vms = proxmox.candidates(host(40 * GiB, short, rich))
    out = proxmox.compute(vms, 50 * MiB)
    assert out == {"short": 4 * GiB + 50 * MiB}


def test_proxmox_takes_first_from_guests_with_enough_free_memory() -> None:
    short = guest("short", actual=4 * GiB, free=100 * MiB)
    rich = guest("rich", actual=4 * GiB, free=3 * GiB)
    out = proxmox.compute(proxmox.candidates(host(1 * GiB, short, rich)), -60 * MiB)
    assert out == {"rich": 4 * GiB - 60 * MiB}


def test_proxmox_water_fill_shares_by_weight_within_bounds() -> None:
    a = proxmox.Vm("a", balloon=2 * GiB, balloon_min=1 * GiB, maxmem=8 * GiB, freemem=0, shares=1000)
    b = proxmox.Vm("b", balloon=2 * GiB, balloon_min=1 * GiB, maxmem=8 * GiB, freemem=0, shares=3000)
    c = proxmox.Vm("c", balloon=2 * GiB, balloon_min=1 * GiB, maxmem=1536 * MiB, freemem=0, shares=1000)
    desired = proxmox.water_fill([a, b, c], 2 * GiB, rounds=16)
    assert desired["c"] == 1536 * MiB  # clamped at its max; the rest shared 1:3
    above = {n: desired[n] - 1 * GiB for n in ("a", "b")}
    assert abs(above["b"] - 3 * above["a"]) <= 4
    assert sum(desired.values()) - 3 * GiB <= 3 * GiB + 2 * GiB


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-8192, 8192),
    st.lists(
        st.tuples(st.integers(512, 8192), st.integers(0, 4096), st.integers(1, 4096), st.integers(1, 3000)),
        min_size=1,
        max_size=6,
    ),
)
def test_proxmox_never_moves_a_balloon_more_than_100_mib_per_cycle(
    goal_mib: int, specs: list[tuple[int, int, int, int]]
) -> None:
    vms = [
        proxmox.Vm(
            f"v{i}", balloon=b * MiB, balloon_min=min(m, b) * MiB, maxmem=(b + x) * MiB, freemem=0, shares=s
        )
        for i, (b, m, x, s) in enumerate(specs)
    ]
    out = proxmox.compute(vms, goal_mib * MiB)
    for v in vms:
        new = out.get(v.name, v.balloon)
        assert abs(new - v.balloon) <= 100 * MiB
        assert new >= min(v.balloon, v.balloon_min)  # never pushed below its minimum
        assert new <= max(v.balloon, v.maxmem)  # never grown above its maximum


# --- static and oracle ---------------------------------------------------------------------------

_SCENARIO = """
[host]
ram = "16G"
[run]
duration = 600
step = 1
[[guest]]
name = "spiky"
max = "4G"
policy = { min = "512M" }
demand = { shape = "spikes", base = "512M", height = "2G", every = 120, length = 30 }
[[guest]]
name = "storm"
max = "2G"
cpu_storm = true
demand = { shape = "constant", level = "256M" }
"""


def test_static_never_changes_the_targets_of_healthy_guests() -> None:
    sim = Simulation(loads_scenario(_SCENARIO), seed=1)
    static = factory("static")(sim)
    for t in range(0, 600, 10):
        assert not static.tick(float(t), sim.snapshot())
        sim.step(10.0)


_STORMING = """
[host]
ram = "16G"
cpus = 8
[run]
duration = 600
step = 1
[[guest]]
name = "storm"
max = "4G"
target = "2G"
vcpus = 4
os = "windows"
cpu_storm = true
stats_period = 10
demand = { shape = "constant", level = "1G" }
[[guest]]
name = "calm"
max = "4G"
target = "2G"
demand = { shape = "constant", level = "1G" }
"""


def test_the_evaluations_static_is_the_daemons_and_deflates_a_guest_the_guard_quarantines() -> None:
    """Both guests boot ballooned to half their memory. Static moves no balloon of its own, but it runs
    through the daemon's tick: the health guard quarantines the guest that storms while ballooned, and
    static deflates it to its ceiling, as the daemon would; the calm one keeps the target it booted with."""
    scenario = loads_scenario(_STORMING)
    made = factory("static")(Simulation(scenario))
    assert isinstance(made, DaemonPolicy) and isinstance(made.policy, StaticPolicy)
    result = run_simulation(scenario, Job("storming", "static"))
    storm, calm = (result.trace.guests.index(n) for n in ("storm", "calm"))
    first, last = result.trace.allocation[0], result.trace.allocation[-1]
    assert (first[storm], first[calm]) == (2 * GiB, 2 * GiB)
    assert (last[storm], last[calm]) == (4 * GiB, 2 * GiB)
    assert 0 < result.metrics.cpu_storm_vm_s < scenario.run.duration / 10  # it stormed, and was stopped


def test_oracle_allocates_at_least_demand_plus_headroom_ahead_of_time() -> None:
    sim = Simulation(loads_scenario(_SCENARIO), seed=3)
    oracle = Oracle(sim)
    headroom = oracle_headroom(sim)
    for _ in range(600):
        targets = oracle.tick(sim.time, None)
        assert isinstance(targets, np.ndarray)
        assert targets[0] >= sim.demand_at([sim.time + 1.0])[0][0] + headroom[0]
        assert targets[1] == sim.max[1]  # a guest that storms when ballooned is left alone
        sim.set_targets(targets)
        sim.step()
        assert not sim.under_pressure.any()


def test_oracle_targets_clamp_to_floor_and_ceiling() -> None:
    future = np.array([[100, 5_000], [300, 6_000]], dtype=np.int64)
    out = oracle_targets(
        future,
        headroom=np.array([10, 10]),
        floor=np.array([500, 0]),
        ceiling=np.array([1_000, 5_500]),
        balloonable=np.array([True, True]),
    )
    assert out.tolist() == [500, 5_500]
