"""What a production run returned to the host and what it cost the applications (pure functions of traces).

The rules, per run, over the samples of the measured service (about every second, after aging):

- **Host memory returned**: ``sum(memory) - sum(RSS of the QEMU processes)`` over the run, in GiB·s (on
  a 1 s grid, each sample holding until the next), less the same figure for the static policy (the median
  of its runs): what the policy gave back beyond what a host without any manager has. Memory the guests
  never used counts for nobody, because the aged guests have touched all of theirs.
- **Balloon**: ``sum(memory - actual)`` over the run, in GiB·s: the balloon's size, which is not what the
  host gets back (free page reporting returns memory without it, and a balloon over pages the host
  never gave costs nothing).
- **RSS above budget s**: the time the guests' QEMU processes together held more than the scenario's budget.
- **OOM kills**, **PSI some / full s** (the guests' memory stall time), **s at the OOM edge** (seconds
  a guest's MemAvailable was under ``OOM_EDGE``), **swap-in pages**: the harms above slowdown, summed
  over guests.
- **Slowdown**: per application, how much slower it ran than under the static policy (the median of the
  static runs): ``1 - rate / static rate`` for the database (pgbench tps) and the web server (wrk
  requests/s), ``wall / static wall - 1`` for the batch job, in per cent; negative is faster. A window
  whose application failed (killed, or no answer) counts as a rate of 0, and is counted as failed.
- **Refaults** and **accuracy**: refaults are the guest kernel's ``workingset_refault_anon + _file`` over the
  run (evicted pages that were needed again); accuracy is ``1 - refaults / reclaimed pages`` (``pgsteal``),
  the measure ByteDance's TMO keeps at or above 0.99. None when the guest reclaimed nothing.

Across repetitions every figure is given as the median with the lowest and highest run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autoballoon.evaluate.production.scenario import WINDOWED
from autoballoon.evaluate.production.trace import ProdGuestTrace, ProdTrace
from autoballoon.units import MiB

F64 = npt.NDArray[np.float64]
#: MemAvailable under this is where the calibration found the guest OOM killer fires.
OOM_EDGE = 32 * MiB
GRID_S = 1.0
US_PER_S = 1e6
PERCENT = 100.0
BASELINE = "static"


def column(g: ProdGuestTrace, key: str) -> F64:
    return np.array([np.nan if v is None else float(v) for v in g.samples.get(key, ())], dtype=np.float64)


def _delta(g: ProdGuestTrace, key: str) -> float:
    values = column(g, key)
    values = values[np.isfinite(values)]
    return float(values[-1] - values[0]) if len(values) > 1 else 0.0


@dataclass(frozen=True, slots=True)
class AppMetrics:
    guest: str
    app: str
    runs: int
    failed: int  # runs without a result (the application failed)
    rate: float | None  # mean over windows (db, web), a failed window counting 0
    p99_ms: float | None  # median over windows
    wall_s: float | None  # mean over runs (batch)
    refaults: int
    reclaimed_pages: int
    accuracy: float | None

    @property
    def merit(self) -> float | None:
        """The figure slowdown is computed from: higher is better for a rate, lower for a wall time."""
        return self.rate if self.app in WINDOWED else self.wall_s


@dataclass(frozen=True, slots=True)
class ProdMetrics:
    scenario: str
    policy: str
    repetition: int
    host_returned: float  # byte-seconds over the run, not yet less the static baseline
    balloon: float  # byte-seconds
    rss_above_budget_s: float
    oom_kills: int
    psi_some_s: float
    psi_full_s: float
    oom_edge_s: float
    swap_in: int
    refaults: int
    reclaimed_pages: int
    apps: tuple[AppMetrics, ...]

    @property
    def accuracy(self) -> float | None:
        return 1.0 - self.refaults / self.reclaimed_pages if self.reclaimed_pages else None


def app_metrics(g: ProdGuestTrace) -> AppMetrics:
    rates = [a.rate if a.rate is not None else 0.0 for a in g.apps]
    p99s = [a.p99_ms for a in g.apps if a.p99_ms is not None]
    walls = [a.wall_s for a in g.apps if a.wall_s and a.error is None]
    refaults = int(_delta(g, "refault_anon") + _delta(g, "refault_file"))
    reclaimed = int(_delta(g, "pgsteal"))
    return AppMetrics(
        guest=g.name,
        app=g.app,
        runs=len(g.apps),
        failed=sum(a.error is not None for a in g.apps),
        rate=statistics.fmean(rates) if rates and g.app in WINDOWED else None,
        p99_ms=statistics.median(p99s) if p99s and g.app in WINDOWED else None,
        wall_s=statistics.fmean(walls) if walls and g.app not in WINDOWED else None,
        refaults=refaults,
        reclaimed_pages=reclaimed,
        accuracy=1.0 - refaults / reclaimed if reclaimed else None,
    )


def on_grid(g: ProdGuestTrace, key: str, grid: F64) -> F64:
    """The column on a common time grid, each sample holding until the next (NaN before the first)."""
    t, values = column(g, "t"), column(g, key)
    keep = np.isfinite(values)
    t, values = t[keep], values[keep]
    index = np.searchsorted(t, grid, side="right") - 1
    out = np.full(len(grid), np.nan)
    out[index >= 0] = values[index[index >= 0]]
    return out


def _grid(run: ProdTrace) -> F64:
    return np.arange(0.0, run.duration_s, GRID_S)


def rss_above_budget_s(run: ProdTrace) -> float:
    grid = _grid(run)
    total = np.sum([on_grid(g, "qemu_rss", grid) for g in run.guests], axis=0)
    return float(np.sum(total > run.budget) * GRID_S)


def below_max_byte_s(run: ProdTrace, key: str) -> float:
    """``sum(memory - key)`` over the run's grid, in byte-seconds (a guest counts from its first sample)."""
    grid = _grid(run)
    return float(sum(np.nansum(g.memory - on_grid(g, key, grid)) * GRID_S for g in run.guests))


def run_metrics(run: ProdTrace) -> ProdMetrics:
    guests = run.guests
    apps = tuple(app_metrics(g) for g in guests)
    edge = sum(float(np.sum(column(g, "guest_mem_available") < OOM_EDGE)) * GRID_S for g in guests)
    return ProdMetrics(
        scenario=run.scenario,
        policy=run.policy,
        repetition=run.repetition,
        host_returned=below_max_byte_s(run, "qemu_rss"),
        balloon=below_max_byte_s(run, "actual"),
        rss_above_budget_s=rss_above_budget_s(run),
        oom_kills=round(sum(_delta(g, "oom_kill") for g in guests)),
        psi_some_s=sum(_delta(g, "psi_some_us") for g in guests) / US_PER_S,
        psi_full_s=sum(_delta(g, "psi_full_us") for g in guests) / US_PER_S,
        oom_edge_s=edge,
        swap_in=round(sum(_delta(g, "pswpin") for g in guests)),
        refaults=sum(a.refaults for a in apps),
        reclaimed_pages=sum(a.reclaimed_pages for a in apps),
        apps=apps,
    )


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of the repetitions, with the lowest and the highest."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None


@dataclass(frozen=True, slots=True)
class AppSummary:
    guest: str
    app: str
    merit: Spread | None  # rate (db, web) or wall seconds (batch)
    p99_ms: Spread | None
    slowdown_pct: Spread | None
    accuracy: Spread | None
    refaults: Spread | None
    failed: int  # failed application runs, over every repetition


@dataclass(frozen=True, slots=True)
class PolicySummary:
    scenario: str
    policy: str
    runs: int
    returned_vs_static: Spread | None  # None without static runs to compare with
    host_returned: Spread
    balloon: Spread
    rss_above_budget_s: Spread
    oom_kills: Spread
    psi_some_s: Spread
    psi_full_s: Spread
    oom_edge_s: Spread
    swap_in: Spread
    accuracy: Spread | None
    apps: tuple[AppSummary, ...]

    @property
    def worst_slowdown_pct(self) -> float:
        """The largest median slowdown of any application (0 when none is measured)."""
        return max((a.slowdown_pct.median for a in self.apps if a.slowdown_pct), default=0.0)

    def sort_key(self) -> tuple[float, float, float, float, float]:
        """Harm first in the design's order: OOM kills, the host over its budget, pressure, slowdown;
        then the most host memory returned."""
        pressure = self.psi_some_s.median + self.oom_edge_s.median + self.swap_in.median
        returned = self.returned_vs_static or self.host_returned
        return (self.oom_kills.median, self.rss_above_budget_s.median, pressure,
                max(self.worst_slowdown_pct, 0.0), -returned.median)  # fmt: skip


def _spread(values: Sequence[float | None]) -> Spread | None:
    return Spread.of([v for v in values if v is not None])


def _must(values: Sequence[float]) -> Spread:
    spread = Spread.of(values)
    assert spread is not None, "a policy summary is made from at least one run"
    return spread


def slowdown_pct(app: str, merit: float | None, baseline: float | None) -> float | None:
    """Per cent slower than the baseline's merit (a rate for db/web, a wall time for batch)."""
    if merit is None or not baseline:
        return None
    if app in WINDOWED:
        return (1.0 - merit / baseline) * PERCENT
    return (merit / baseline - 1.0) * PERCENT


def summarize(metrics: Sequence[ProdMetrics]) -> list[PolicySummary]:
    """One summary per (scenario, policy), ranked harm first; slowdown and returned memory are against the
    static policy's median run of the same scenario (absent without static runs)."""
    out: list[PolicySummary] = []
    for scenario in dict.fromkeys(m.scenario for m in metrics):
        mine = [m for m in metrics if m.scenario == scenario]
        base = [m for m in mine if m.policy == BASELINE]
        base_returned = statistics.median([m.host_returned for m in base]) if base else 0.0
        base_merit: dict[str, float | None] = {}
        for app in (a.guest for a in mine[0].apps):
            merits = [a.merit for m in base for a in m.apps if a.guest == app and a.merit is not None]
            base_merit[app] = statistics.median(merits) if merits else None
        rows = []
        for policy in dict.fromkeys(m.policy for m in mine):
            runs = [m for m in mine if m.policy == policy]
            apps = tuple(
                AppSummary(
                    guest=a0.guest,
                    app=a0.app,
                    merit=_spread([a.merit for a in same]),
                    p99_ms=_spread([a.p99_ms for a in same]),
                    slowdown_pct=_spread(
                        [slowdown_pct(a.app, a.merit, base_merit.get(a.guest)) for a in same]
                    ),
                    accuracy=_spread([a.accuracy for a in same]),
                    refaults=_spread([float(a.refaults) for a in same]),
                    failed=sum(a.failed for a in same),
                )
                for a0 in runs[0].apps
                for same in [[a for m in runs for a in m.apps if a.guest == a0.guest]]
            )
            rows.append(
                PolicySummary(
                    scenario=scenario,
                    policy=policy,
                    runs=len(runs),
                    returned_vs_static=_spread([m.host_returned - base_returned for m in runs if base]),
                    host_returned=_must([m.host_returned for m in runs]),
                    balloon=_must([m.balloon for m in runs]),
                    rss_above_budget_s=_must([m.rss_above_budget_s for m in runs]),
                    oom_kills=_must([m.oom_kills for m in runs]),
                    psi_some_s=_must([m.psi_some_s for m in runs]),
                    psi_full_s=_must([m.psi_full_s for m in runs]),
                    oom_edge_s=_must([m.oom_edge_s for m in runs]),
                    swap_in=_must([m.swap_in for m in runs]),
                    accuracy=_spread([m.accuracy for m in runs]),
                    apps=apps,
                )
            )
        out.extend(sorted(rows, key=PolicySummary.sort_key))
    return out
