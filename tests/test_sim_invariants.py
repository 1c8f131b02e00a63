"""Properties of the simulator that must hold for any scenario and any sequence of balloon targets."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from autoballoon.sim import DEFAULT_PHYSICS, Simulation, loads_scenario
from autoballoon.units import MiB

TU = DEFAULT_PHYSICS
RAM = 32 * 1024  # MiB
BASE = 1024


@st.composite
def guest_tables(draw: st.DrawFn, i: int) -> str:
    max_mib = draw(st.integers(256, 8192))
    target = draw(st.integers(0, max_mib))
    level = draw(st.integers(0, max_mib * 3 // 2))
    shape = draw(
        st.sampled_from(
            [
                f'shape = "constant", level = "{level}M"',
                f'shape = "steps", points = [[0, "{level // 3}M"], [40, "{level}M"], [90, "{level // 2}M"]]',
                f'shape = "spikes", base = "{level // 4}M", height = "{level}M", every = 30, length = 10',
                f'shape = "sine", mean = "{level}M", amplitude = "{level // 2}M", period = 60, noise = 0.1',
            ]
        )
    )
    flags = "\n".join(
        f"{name} = true" for name in ("autodeflate", "stuck", "cpu_storm") if draw(st.booleans())
    )
    os_name = draw(st.sampled_from(["linux", "windows"]))
    swap = draw(st.sampled_from(["0", "256M", "1G"]))
    return (
        f'[[guest]]\nname = "g{i}"\nmax = "{max_mib}M"\ntarget = "{target}M"\nswap = "{swap}"\n'
        f'os = "{os_name}"\n'
        f"stats_period = {draw(st.integers(1, 10))}\n{flags}\ndemand = {{ {shape} }}\n"
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Simulation, list[tuple[float, list[float | None]]]]:
    n = draw(st.integers(1, 4))
    guests = "".join(draw(guest_tables(i)) for i in range(n))
    # Some drivers lose the requests sent for a while (or from the start to the end).
    for i in range(n):
        if draw(st.booleans()):
            lost, back = sorted(draw(st.lists(st.integers(0, 300), min_size=2, max_size=2)))
            guests += f'[[event]]\nat = {lost}\nguest = "g{i}"\nrequests = false\n'
            guests += f'[[event]]\nat = {back}\nguest = "g{i}"\nrequests = true\n'
    text = f'[host]\nram = "{RAM}M"\nbase_used = "{BASE}M"\nreserve = "1G"\n[run]\nduration = 300\n{guests}'
    sim = Simulation(loads_scenario(text, source="prop.toml"), seed=draw(st.integers(0, 3)))
    actions = draw(
        st.lists(
            st.tuples(
                st.sampled_from([0.25, 1.0, 2.5, 7.0]),
                st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=n, max_size=n),
            ),
            min_size=1,
            max_size=25,
        )
    )
    return sim, actions


def check_state(sim: Simulation) -> None:
    assert (sim.actual >= 0).all() and (sim.allocation <= sim.max).all()
    assert (sim.target >= 0).all() and (sim.target <= sim.max).all()
    # Host: every byte of RAM is the host's own, a guest's, QEMU's, or available.
    overhead = sim.n * TU.qemu_overhead_bytes
    ram = sim.scenario.host.ram
    assert sim.host_available + int(sim.actual.sum()) + overhead + sim.scenario.host.base_used == ram
    # Guest: kernel + resident anonymous + cache + free = actual, with nothing negative.
    resident = sim.demand - sim.swap_used
    free = sim.actual - sim.kernel - resident - sim.cache
    assert (resident >= 0).all() and (sim.cache >= TU.cache_min_bytes).all() and (free >= 0).all()
    swap_size = np.array([g.swap for g in sim.scenario.guests])
    assert (sim.swap_used >= 0).all() and (sim.swap_used <= swap_size).all()
    room = sim.actual - sim.headroom
    assert (sim.under_pressure == (sim.demand > room)).all()


@given(worlds())
@settings(max_examples=60, deadline=None)
def test_invariants_hold_for_any_targets(
    world: tuple[Simulation, list[tuple[float, list[float | None]]]],
) -> None:
    sim, actions = world
    stuck = np.array([g.stuck for g in sim.scenario.guests])
    autodeflate = np.array([g.autodeflate for g in sim.scenario.guests])
    check_state(sim)
    for dt, fractions in actions:
        for i, frac in enumerate(fractions):
            if frac is not None:
                sim.set_target(i, asked := int(frac * int(sim.max[i])) // 4096 * 4096)
                assert sim.target[i] == asked  # the host takes it, whether the driver gets it or not
        before = sim.actual.copy()
        target = sim.driver_target.copy()
        cpu, kills = sim.cpu.copy(), sim.oom_kills.copy()
        sim.step(dt)
        check_state(sim)
        after = sim.actual
        substeps = math.ceil(dt)
        # Actual moves toward the driver's target, never past it, and no faster than the configured speeds ...
        shrinking = before > target
        assert (after[shrinking & ~autodeflate] >= target[shrinking & ~autodeflate]).all()
        assert (before - after <= TU.inflate_bps * dt + substeps).all()
        growing = (before < target) & ~autodeflate
        assert (after[growing] <= target[growing]).all()
        assert (after[growing] - before[growing] <= TU.deflate_bps * dt + substeps).all()
        assert (after[~autodeflate & (before == target)] == target[~autodeflate & (before == target)]).all()
        # ... except autodeflate, which only ever adds memory beyond the target, and stuck, which never moves.
        assert (after[stuck] == before[stuck]).all()
        assert (
            after[autodeflate & (after > np.maximum(target, before))]
            <= sim.max[autodeflate & (after > np.maximum(target, before))]
        ).all()
        assert (sim.cpu >= cpu).all() and (sim.oom_kills >= kills).all()


@given(worlds())
@settings(max_examples=20, deadline=None)
def test_guest_stats_are_self_consistent(
    world: tuple[Simulation, list[tuple[float, list[float | None]]]],
) -> None:
    sim, actions = world
    for dt, _ in actions:
        sim.step(dt)
    sim.run(10)  # every guest has reported (periods are at most 10 s)
    snap = sim.snapshot()
    for g, spec in zip(snap.guests, sim.scenario.guests, strict=True):
        s = g.stats
        assert s.present and s.total is not None and s.available is not None and s.free is not None
        assert 0 <= s.free <= s.available <= s.total <= g.max_bytes
        # A report is visible stats_delay_s after its capture, and captures land on step boundaries.
        oldest = spec.stats_period + TU.stats_delay_s + sim.scenario.run.step  # type: ignore[operator]
        assert s.last_update is not None and 0 <= snap.wall_time - s.last_update < oldest + 1e-6
        if spec.autodeflate or spec.os == "windows":
            assert s.total == g.max_bytes
        assert g.used_bytes is not None and g.used_bytes >= 0
    assert snap.mem_available == max(0, sim.host_available) and snap.mem_total == RAM * MiB
