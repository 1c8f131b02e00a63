"""What a real run did to its guests and its host, computed from its trace alone (pure functions).

The rules, per guest, over the samples of a run (about every 0.5 s):

- **OOM kills**: the guest kernel's ``oom_kill`` counter (/proc/vmstat) at the last sample minus the first.
- **Pressure seconds**: the time between two samples counts when, in it, the guest's memory PSI "some"
  stall time grew at all, or its swap-in count (``pswpin``) grew, or when the guest's MemAvailable at the
  later sample is under ``LOW_AVAILABLE_SHARE`` of its memory.
- **Seconds above the budget** (per run): the time when the sum of every guest's balloon ``actual`` is
  above the scenario's budget, on a common 0.5 s grid (each guest's last sample holds until its next).
- **Reclaimed by the balloon**: mean over the run of ``memory - actual``; **at the host**: mean of
  ``memory - RSS of the QEMU process``. A guest never touches most of a fresh boot's memory, so the host
  figure counts untouched pages too, and QEMU's own memory counts against it.
- **Budget unused** (per run): mean over the run of the budget minus the sum of every guest's balloon
  ``actual``, on the same grid (negative while above the budget). Reclaim beyond what the budget needs is
  memory kept from the guests: read it beside the next column.
- **Lowest MemAvailable** (per run): the least MemAvailable any guest reported in any sample, as the guest
  sees it. The OOM killer fires a few MiB to a few tens of MiB above zero (the calibration's OOM edge).
- **Reaction**: for each ``alloc``/``ramp``, the time from its start to the first applied growth of the
  daemon's target for that guest before the guest's next command (none: no growth came in that time,
  counted as "growths not followed"). Commands at second 0 set the guest up while the daemon starts and
  are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autoballoon.evaluate.real.trace import GuestTrace, RunTrace

#: MemAvailable under this share of the guest's memory counts as pressure (5 % of 512 MiB = 25.6 MiB: the
#: last stretch before the OOM killer, where the kernel is already reclaiming hard).
LOW_AVAILABLE_SHARE = 0.05
GRID_S = 0.5
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GuestMetrics:
    name: str
    oom_kills: int
    pressure_s: float
    reclaimed_balloon: int  # bytes, mean over the run
    reclaimed_host: int | None  # bytes, mean; None without RSS samples
    reactions_s: tuple[float, ...]
    unanswered: int  # growth commands the target never followed


@dataclass(frozen=True, slots=True)
class RunMetrics:
    scenario: str
    policy: str
    oom_kills: int
    pressure_s: float  # guest-seconds
    above_budget_s: float
    reclaimed_balloon: int  # bytes, sum over guests of their means
    reclaimed_host: int | None
    budget_unused: int  # bytes, mean over the run
    lowest_available: int | None  # bytes; None without guest samples
    reaction_p50_s: float | None
    reaction_max_s: float | None
    unanswered: int
    guests: tuple[GuestMetrics, ...]

    def sort_key(self) -> tuple[int, float, float, int]:
        """Harm first (OOM kills, then seconds above budget, then pressure), then the most reclaimed."""
        return (self.oom_kills, round(self.above_budget_s), round(self.pressure_s), -self.reclaimed_balloon)


def column(g: GuestTrace, key: str) -> F64:
    """A sample column as floats, NaN where the value was missing."""
    return np.array([np.nan if v is None else v for v in g.samples.get(key, ())], dtype=np.float64)


def _rises(values: F64) -> npt.NDArray[np.bool_]:
    """Per sample interval (i-1, i): did the cumulative counter grow? (False where either is missing.)"""
    if values.size < 2:
        return np.zeros(0, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.diff(values), nan=0.0) > 0


def oom_kills(g: GuestTrace) -> int:
    kills = column(g, "oom_kill")
    kills = kills[~np.isnan(kills)]
    return int(kills[-1] - kills[0]) if kills.size else 0


def pressure_seconds(g: GuestTrace) -> float:
    t = column(g, "t")
    if t.size < 2:
        return 0.0
    available = column(g, "guest_mem_available")[1:]
    with np.errstate(invalid="ignore"):
        low = available < LOW_AVAILABLE_SHARE * g.memory
    flagged = _rises(column(g, "psi_some_us")) | _rises(column(g, "pswpin")) | low
    return float(np.diff(t)[flagged].sum())


def _mean_gap(g: GuestTrace, key: str) -> int | None:
    values = column(g, key)
    values = values[~np.isnan(values)]
    return round(g.memory - values.mean()) if values.size else None


def reactions(
    g: GuestTrace, actions_t: Sequence[float], grows: Sequence[bool], end_s: float
) -> tuple[list[float], int]:
    """(reaction seconds of each answered growth command, count of unanswered ones)."""
    starts = [c.started_s for c in g.commands]
    answered: list[float] = []
    missing = 0
    for i, c in enumerate(g.commands):
        if c.started_s is None or not _is_growth(c.text) or c.at_s == 0:
            continue
        later = [s for s in starts[i + 1 :] if s is not None]
        window_end = later[0] if later else end_s
        hits = [t for t, up in zip(actions_t, grows, strict=True) if up and c.started_s <= t < window_end]
        if hits:
            answered.append(round(hits[0] - c.started_s, 3))
        else:
            missing += 1
    return answered, missing


def _is_growth(text: str) -> bool:
    return text.split()[0] in ("alloc", "ramp")


def guest_metrics(run: RunTrace, g: GuestTrace) -> GuestMetrics:
    mine = sorted((a for a in run.actions if a.vm == g.domain), key=lambda a: a.t)
    answered, missing = reactions(
        g, [a.t for a in mine], [a.new_target > a.old_target for a in mine], run.duration_s
    )
    return GuestMetrics(
        name=g.name,
        oom_kills=oom_kills(g),
        pressure_s=round(pressure_seconds(g), 1),
        reclaimed_balloon=_mean_gap(g, "actual") or 0,
        reclaimed_host=_mean_gap(g, "qemu_rss"),
        reactions_s=tuple(answered),
        unanswered=missing,
    )


def held_on_grid(g: GuestTrace, key: str, grid: F64) -> F64:
    """A column as a step function on ``grid`` (the last sample at or before each point; NaN before any)."""
    t, values = column(g, "t"), column(g, key)
    keep = ~np.isnan(values)
    t, values = t[keep], values[keep]
    idx = np.searchsorted(t, grid, side="right") - 1
    out = np.full(grid.shape, np.nan)
    out[idx >= 0] = values[idx[idx >= 0]]
    return out


def actual_on_grid(run: RunTrace) -> F64:
    """The sum of every guest's balloon ``actual`` on the run's common grid (NaN until every guest has
    its first sample; empty without guests)."""
    grid = np.arange(0.0, run.duration_s, GRID_S)
    if not run.guests or grid.size == 0:
        return np.zeros(0)
    return np.asarray(sum(held_on_grid(g, "actual", grid) for g in run.guests), dtype=np.float64)


def above_budget_seconds(run: RunTrace) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.count_nonzero(actual_on_grid(run) > run.budget) * GRID_S)


def budget_unused(run: RunTrace) -> int:
    total = actual_on_grid(run)
    total = total[~np.isnan(total)]
    return round(run.budget - total.mean()) if total.size else 0


def lowest_available(run: RunTrace) -> int | None:
    seen = [v for g in run.guests for v in g.samples.get("guest_mem_available", ()) if v is not None]
    return round(min(seen)) if seen else None


def run_metrics(run: RunTrace) -> RunMetrics:
    per_guest = tuple(guest_metrics(run, g) for g in run.guests)
    all_reactions = [r for gm in per_guest for r in gm.reactions_s]
    hosts = [gm.reclaimed_host for gm in per_guest]
    return RunMetrics(
        scenario=run.scenario,
        policy=run.policy,
        oom_kills=sum(gm.oom_kills for gm in per_guest),
        pressure_s=round(sum(gm.pressure_s for gm in per_guest), 1),
        above_budget_s=above_budget_seconds(run),
        reclaimed_balloon=sum(gm.reclaimed_balloon for gm in per_guest),
        reclaimed_host=None if None in hosts else sum(h for h in hosts if h is not None),
        budget_unused=budget_unused(run),
        lowest_available=lowest_available(run),
        reaction_p50_s=float(np.median(all_reactions)) if all_reactions else None,
        reaction_max_s=max(all_reactions) if all_reactions else None,
        unanswered=sum(gm.unanswered for gm in per_guest),
        guests=per_guest,
    )


def ranked(rows: Sequence[RunMetrics]) -> list[RunMetrics]:
    """Harm first (OOM kills, above-budget seconds, pressure seconds), then the most reclaimed."""
    return sorted(rows, key=RunMetrics.sort_key)
