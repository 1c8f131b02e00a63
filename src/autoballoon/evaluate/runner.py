"""Runs policies on scenarios: one fresh simulation per (scenario, policy), in parallel processes.

The loop is the whole "controller" of an evaluation run: step the simulation by its own step, call the
policy whenever its interval has passed (no sleeping: time is virtual), apply the targets it returns,
and let the :class:`~.metrics.Recorder` integrate. Runs are independent, so they are spread over worker
processes, longest first; each returns its metrics plus a thinned trace of a few guests for the plots.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.metrics import (
    Metrics,
    Recorder,
    demand_step_onsets,
    efficiency,
    need_table,
    step_thresholds,
)
from autoballoon.evaluate.policies import (
    CONTENDERS,
    ORACLE,
    ContenderFactory,
    apply_overrides,
    factory,
    oracle_ahead_rows,
)
from autoballoon.policy import create_policy
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import Scenario, load_scenario
from autoballoon.tunables import DEFAULT_TUNABLES

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


#: Points per line in the plots: traces are thinned to about this many samples.
PLOT_POINTS = 1200
#: Guests drawn per scenario (the special ones first: stuck, no stats, Windows, CPU storm, faults).
PLOT_GUESTS = 4
#: Relative cost of one decision per guest, to start the longest runs first (a scheduling hint).
COST_PER_TICK_GUEST = 20.0


@dataclass(frozen=True, slots=True)
class Job:
    scenario_path: str
    policy: str
    overrides: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Trace:
    """A thinned record of a run for the plots (bytes; times in seconds)."""

    times: F64
    guests: tuple[str, ...]
    demand: I64  # (times, guests): the intended demand (the trace, before any kill)
    allocation: I64  # (times, guests)
    max: I64  # (guests,)
    reclaimed: I64  # (times,): sum(max) - sum(charged), all guests (see metrics)
    host_available: I64  # (times,)
    host_reserve: int


@dataclass(frozen=True, slots=True)
class RunResult:
    metrics: Metrics
    trace: Trace
    wall_s: float
    guests: int
    duration_s: float


def scenario_name(path: str | Path) -> str:
    return Path(path).stem


def find_scenarios(paths: Sequence[str | Path]) -> list[Path]:
    """Scenario files named or inside the named directories (``*.toml``, sorted); missing paths refused."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(p.glob("*.toml")))
        elif p.is_file():
            found.append(p)
        else:
            raise InvalidValueError(
                "scenario path", str(raw), "an existing .toml file or a directory of them"
            )
    if not found:
        raise InvalidValueError("scenarios", [str(p) for p in paths], "at least one .toml scenario file")
    names = [scenario_name(p) for p in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidValueError("scenario names", dupes, "scenario files with distinct names")
    return found


def _plot_guests(scenario: Scenario, count: int) -> list[int]:
    faulted = {e.guest for e in scenario.events}
    special = [
        i
        for i, g in enumerate(scenario.guests)
        if g.stuck
        or g.cpu_storm
        or not g.stats
        or g.os == "windows"
        or g.balloon == "none"
        or g.name in faulted
    ]
    chosen = special[:count]
    rest = [i for i in range(len(scenario.guests)) if i not in chosen]
    if rest and len(chosen) < count:
        picks = np.linspace(0, len(rest) - 1, min(count - len(chosen), len(rest))).round().astype(int)
        chosen.extend(rest[j] for j in dict.fromkeys(picks.tolist()))
    return sorted(chosen)


def run_simulation(scenario: Scenario, job: Job, make_policy: ContenderFactory | None = None) -> RunResult:
    """One contender over one scenario, start to end, in this process. ``make_policy`` builds it instead
    of ``job.policy``'s factory (tests measure policies that are not in the suite with it)."""
    started = time.perf_counter()
    tunables = apply_overrides(DEFAULT_TUNABLES, job.overrides)
    sim = Simulation(scenario, seed=job.seed)
    policy = (make_policy or factory(job.policy, tunables))(sim)
    run = scenario.run
    steps = run.steps
    grid = np.arange(steps, dtype=np.float64) * run.step
    intended = sim.demand_at(grid)
    max_bytes = np.asarray(sim.max)
    onsets = demand_step_onsets(intended, run.step, step_thresholds(max_bytes))
    physics = sim.physics
    need = need_table(
        intended,
        np.asarray(sim.headroom),
        max_bytes,
        ahead_rows=oracle_ahead_rows(run.step, physics.balloon_latency_s),
        # the latency, and the step between a policy's tick and the recorder's sample
        behind_rows=math.ceil(physics.balloon_latency_s / run.step) + 1,
        shed_per_row=round(physics.inflate_bps * run.step),
    )
    rec = Recorder(sim, onsets, need)
    del intended

    picked = _plot_guests(scenario, PLOT_GUESTS)
    stride = max(1, math.ceil(steps / PLOT_POINTS))
    n_rows = steps // stride + 1
    times = np.zeros(n_rows)
    demand = np.zeros((n_rows, len(picked)), dtype=np.int64)
    alloc = np.zeros((n_rows, len(picked)), dtype=np.int64)
    reclaimed = np.zeros(n_rows, dtype=np.int64)
    available = np.zeros(n_rows, dtype=np.int64)
    sum_max = int(np.asarray(sim.max).sum())
    row = 0

    interval = policy.interval_s
    next_tick = 0.0
    for k in range(steps):
        now = sim.time
        if now + 1e-9 >= next_tick:
            snap = sim.snapshot() if policy.needs_snapshot else None
            c0 = time.process_time()
            targets = policy.tick(now, snap)
            rec.add_tick(time.process_time() - c0)
            if isinstance(targets, np.ndarray):
                sim.set_targets(targets)
            else:
                for name, value in targets.items():
                    sim.set_target(name, value)
            next_tick += interval
        if k % stride == 0:
            times[row] = now
            demand[row] = sim.intended_demand[picked]
            alloc[row] = sim.allocation[picked]
            reclaimed[row] = sum_max - rec.charged_sum()
            available[row] = sim.host_available
            row += 1
        sim.step()
        rec.record()

    trace = Trace(
        times=times[:row],
        guests=tuple(sim.names[i] for i in picked),
        demand=demand[:row],
        allocation=alloc[:row],
        max=np.asarray(sim.max)[picked].copy(),
        reclaimed=reclaimed[:row],
        host_available=available[:row],
        host_reserve=scenario.host.reserve,
    )
    return RunResult(
        metrics=rec.result(scenario_name(scenario.source), job.policy),
        trace=trace,
        wall_s=time.perf_counter() - started,
        guests=sim.n,
        duration_s=run.duration,
    )


def run_job(job: Job) -> RunResult:
    return run_simulation(load_scenario(job.scenario_path), job)


def _cost(scenario: Scenario, policy: str) -> float:
    run = scenario.run
    interval = run.step if policy == ORACLE else create_policy(policy, DEFAULT_TUNABLES).interval_s
    return run.steps + run.duration / interval * len(scenario.guests) * COST_PER_TICK_GUEST


def with_efficiency(results: list[RunResult]) -> list[RunResult]:
    """Each result with its oracle efficiency, from the oracle's run on the same scenario."""
    oracle = {r.metrics.scenario: r.metrics.reclaimed_gib_h for r in results if r.metrics.policy == ORACLE}
    out = []
    for r in results:
        eff = efficiency(r.metrics.reclaimed_gib_h, oracle.get(r.metrics.scenario))
        out.append(replace(r, metrics=replace(r.metrics, oracle_efficiency=eff)))
    return out


def run_suite(
    scenario_paths: Sequence[Path],
    policies: Sequence[str],
    overrides: tuple[str, ...] = (),
    *,
    seed: int = 0,
    workers: int | None = None,
) -> list[RunResult]:
    """Every policy on every scenario (the oracle always runs: efficiency is measured against it).

    Scenarios are loaded (and so validated) here, before any run starts: a bad file changes nothing.
    Results come back ordered by scenario, then by :data:`~.policies.CONTENDERS`.
    """
    apply_overrides(DEFAULT_TUNABLES, overrides)  # refuse a bad --set before doing any work
    scenarios = {str(p): load_scenario(p) for p in scenario_paths}
    wanted = [p for p in CONTENDERS if p in policies or p == ORACLE]
    jobs = [Job(path, pol, overrides, seed) for path in scenarios for pol in wanted]
    jobs.sort(key=lambda j: -_cost(scenarios[j.scenario_path], j.policy))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        results = [run_simulation(scenarios[j.scenario_path], j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_job, jobs))
    results = with_efficiency(results)
    order = {str(p): i for i, p in enumerate(scenario_paths)}
    by_job = sorted(
        zip(jobs, results, strict=True),
        key=lambda jr: (order[jr[0].scenario_path], CONTENDERS.index(jr[0].policy)),
    )
    return [r for j, r in by_job if j.policy in policies]
