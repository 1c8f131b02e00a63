"""The numbers a policy is judged by, in one place (``docs/evaluation.md`` states them for readers).

:class:`Recorder` is the imperative part: the runner hands it the simulation after every step and it
integrates, in O(guests) NumPy work per step. Everything else here is pure: finding demand steps in a
trace, percentiles, efficiency. All integrals are exact sums of ``value * dt`` over the simulation steps.

- reclaimed: GiB-hours of ``sum(max) - sum(charged)``, where each guest is charged at least what its
  workload needed: ``charged = max(allocated, need)``, ``need`` being the most its *intended* demand (the
  scenario's trace, before any OOM kill) plus headroom reaches within the oracle's lookahead, up to max.
  So memory a kill freed, or that a guest gave up by swapping, is never counted as reclaimed: a policy
  cannot beat the oracle by harming guests;
- pressure: VM-seconds with demand above what the guest has room for (the simulator's ``under_pressure``);
- OOM kills: kills inside guests during the run;
- host overrun: seconds with the host's available memory below its reserve;
- reaction: from a demand step to the first moment the guest's allocation covers it again;
- CPU: process time of the policy's decision per tick;
- CPU storm: VM-seconds a guest spins near 100 % of its vCPUs (the balloon CPU storm), also harm.

A run longer than a day is also broken down per day (:class:`Day`, days from the run's start): a burst
that recurs every night must do less harm on the second night than on the first, and only a per-day
figure shows it. Each day is labelled by its bursts (:func:`burst_days`): a *first* one (a demand step at
a time of day the guest had none at on an earlier day) or only *recurring* ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from autoballoon.sim.engine import Simulation
from autoballoon.units import GiB, MiB

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

SECONDS_PER_HOUR = 3600.0


#: A demand step (for reaction times) is a rise of at least ``max(STEP_MIN_BYTES, STEP_FRACTION * max)``
#: within ``STEP_WINDOW_S``: big enough that a manager should notice, fast enough that it must react.
STEP_MIN_BYTES = 128 * MiB
STEP_FRACTION = 0.05
STEP_WINDOW_S = 10.0
#: A guest whose CPU load (share of its vCPUs) is at least this is spinning (the balloon CPU storm).
STORM_LOAD = 0.9
#: The per-day breakdown's day (from the run's start, not the wall clock: "night 2" is the run's).
DAY_S = 86_400.0
#: A demand step within this many seconds of the time of day of one on an earlier day recurs: the
#: width of the daemon's profile slot on either side, so a burst that moved by a slot or more is new.
RECUR_WINDOW_S = 300.0
#: What a day's demand steps were (:func:`burst_days`).
NO_BURST, FIRST_BURST, RECURRING_BURST = "none", "first", "recurring"


@dataclass(frozen=True, slots=True)
class Day:
    """One day of a run (from its start): the harm and the reclaim in it, and what its bursts were.
    The days of a run sum to its totals."""

    day: int  # 1 for the run's first day
    bursts: str  # NO_BURST, FIRST_BURST or RECURRING_BURST
    reclaimed_gib_h: float
    pressure_vm_s: float
    oom_kills: int
    host_overrun_s: float

    def to_json(self) -> dict[str, object]:
        return {
            "day": self.day,
            "bursts": self.bursts,
            "reclaimed_gib_h": round(self.reclaimed_gib_h, 4),
            "pressure_vm_s": round(self.pressure_vm_s, 3),
            "oom_kills": self.oom_kills,
            "host_overrun_s": round(self.host_overrun_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Metrics:
    """One (scenario, policy) run. Field names are the ``--json`` names."""

    scenario: str
    policy: str
    reclaimed_gib_h: float
    oracle_efficiency: float | None
    pressure_vm_s: float
    oom_kills: int
    host_overrun_s: float
    reaction_p50_s: float | None
    reaction_p99_s: float | None
    cpu_per_tick_ms: float | None
    #: Not in ``--json`` (whose field set scripts rely on); shown in tables and the report.
    cpu_storm_vm_s: float = 0.0
    #: Memory the guests did not hold although their workload needed it (they swapped, or a kill freed
    #: it), in GiB-hours: what the plain ``sum(max) - sum(allocated)`` would have wrongly credited.
    uncredited_gib_h: float = 0.0
    #: A run longer than a day, per day (empty for a run of a day or less); ``--json``'s ``days``.
    days: tuple[Day, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "reclaimed_gib_h": round(self.reclaimed_gib_h, 4),
            "oracle_efficiency": None if self.oracle_efficiency is None else round(self.oracle_efficiency, 4),
            "pressure_vm_s": round(self.pressure_vm_s, 3),
            "oom_kills": self.oom_kills,
            "host_overrun_s": round(self.host_overrun_s, 3),
            "reaction_p50_s": None if self.reaction_p50_s is None else round(self.reaction_p50_s, 3),
            "reaction_p99_s": None if self.reaction_p99_s is None else round(self.reaction_p99_s, 3),
            "cpu_per_tick_ms": None if self.cpu_per_tick_ms is None else round(self.cpu_per_tick_ms, 4),
            "days": [d.to_json() for d in self.days],
        }


class Harmed(Protocol):
    """Anything that counts harm: one run's :class:`Metrics` or a policy's suite summary."""

    @property
    def oom_kills(self) -> int: ...
    @property
    def host_overrun_s(self) -> float: ...
    @property
    def pressure_vm_s(self) -> float: ...
    @property
    def cpu_storm_vm_s(self) -> float: ...


def harm(m: Harmed) -> tuple[str, ...]:
    """The kinds of harm a run (or a suite) did, worst first: what every table and plot marks it with."""
    kinds = (
        ("OOM kills", m.oom_kills > 0),
        ("host overrun", m.host_overrun_s > 0),
        ("pressure", m.pressure_vm_s > 0),
        ("CPU storm", m.cpu_storm_vm_s > 0),
    )
    return tuple(name for name, present in kinds if present)


#: Harm that no efficiency excuses: a run with either is flagged in every table and plot.
SEVERE_HARM = ("OOM kills", "host overrun")


def step_thresholds(max_bytes: I64) -> I64:
    return np.maximum(STEP_MIN_BYTES, (max_bytes * STEP_FRACTION).astype(np.int64))


def demand_step_onsets(table: I64, step_s: float, thresholds: I64) -> B:
    """Where a demand step starts: ``table`` is (times, guests) of demand on the simulation grid.

    A time is "rising" when demand is at least a threshold above its lowest value over the window before
    it; an onset is the first rising time of a run of rising times, so one step counts once.
    """
    n_t = table.shape[0]
    window = max(1, round(STEP_WINDOW_S / step_s))
    low = table.copy()
    for lag in range(1, window + 1):
        shifted = np.empty_like(table)
        shifted[:lag] = table[:1]
        shifted[lag:] = table[: n_t - lag]
        np.minimum(low, shifted, out=low)
    rising = (table - low) >= thresholds[np.newaxis, :]
    onset = rising.copy()
    onset[1:] &= ~rising[:-1]
    onset[0] = False  # the initial level is where the scenario starts, not a step
    return onset


def burst_days(onsets: B, step_s: float, n_days: int) -> list[str]:
    """Each day's bursts, from the demand steps (``onsets``, (times, guests) on the simulation grid):
    :data:`FIRST_BURST` when a guest has a step at a time of day it had none at (within
    :data:`RECUR_WINDOW_S`) on an earlier day, else :data:`RECURRING_BURST` when it has steps, else
    :data:`NO_BURST`. A burst that moved to another time is a first one again: nothing could expect it."""
    labels = [NO_BURST] * n_days
    rows, guests = np.nonzero(onsets)
    seen: dict[int, list[tuple[int, float]]] = {}  # per guest: (day, time of day) of each step
    for row, guest in sorted(zip(rows.tolist(), guests.tolist(), strict=True)):
        t = row * step_s
        day, clock = min(int(t // DAY_S), n_days - 1), t % DAY_S
        before = seen.setdefault(guest, [])
        if not any(d < day and _apart(clock, c) <= RECUR_WINDOW_S for d, c in before):
            labels[day] = FIRST_BURST
        elif labels[day] == NO_BURST:
            labels[day] = RECURRING_BURST
        before.append((day, clock))
    return labels


def _apart(a: float, b: float) -> float:
    """Seconds between two times of day, across midnight too."""
    gap = abs(a - b) % DAY_S
    return min(gap, DAY_S - gap)


def percentile(values: npt.ArrayLike, q: float) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    return float(np.percentile(arr, q))


def efficiency(reclaimed: float, oracle_reclaimed: float | None) -> float | None:
    """``reclaimed / oracle's``; None when the oracle reclaims nothing (nothing to compare against)."""
    if oracle_reclaimed is None or oracle_reclaimed <= 0.0:
        return None
    return reclaimed / oracle_reclaimed


def need_table(
    table: I64, headroom: I64, max_bytes: I64, *, ahead_rows: int, behind_rows: int, shed_per_row: int
) -> I64:
    """The least each guest is charged at each step: what a guest that is never harmed must hold.

    ``table`` is (times, guests) of intended demand (before any kill). A guest that is never harmed holds
    its demand plus ``headroom`` (below that it swaps), and:

    - that much ahead of time: the most demand reaches over the next ``ahead_rows`` steps (the oracle's
      lookahead, the moment it gives a balloon to get out of the way before demand arrives);
    - still for ``behind_rows`` steps after demand falls (a new target reaches the driver that late);
    - then no faster than the balloon inflates, ``shed_per_row`` bytes a step.

    So the oracle allocates exactly this, and no policy is charged less than the oracle for memory its
    guests needed: not even one whose guest, OOM-killed before demand fell, had less to give back.
    """
    rows = len(table)
    need = table.copy()
    for lag in range(1, min(ahead_rows, rows - 1) + 1):
        np.maximum(need[:-lag], table[lag:], out=need[:-lag])
    ahead = need.copy()
    for lag in range(1, min(behind_rows, rows - 1) + 1):
        np.maximum(need[lag:], ahead[:-lag], out=need[lag:])
    # Shedding at most shed_per_row a step: need[k] = max over j <= k of need[j] - (k - j) * shed.
    ramp = np.arange(rows, dtype=np.int64)[:, np.newaxis] * shed_per_row
    need += ramp
    np.maximum.accumulate(need, axis=0, out=need)
    need -= ramp
    need += headroom[np.newaxis, :]
    np.minimum(need, max_bytes[np.newaxis, :], out=need)
    return need


class Recorder:
    """Integrates the metrics over a run; call :meth:`record` after each simulation step.

    ``onsets`` marks demand steps and ``need`` the least each guest is charged (:func:`need_table`), both
    on the simulation's step grid.
    """

    def __init__(self, sim: Simulation, onsets: B, need: I64) -> None:
        self.sim = sim
        self._need = need
        vcpus = np.array([g.vcpus for g in sim.scenario.guests], dtype=np.float64).reshape(sim.n)
        self._storm_ns = vcpus * 1e9 * STORM_LOAD  # CPU ns per second of a spinning guest
        self._charged = np.zeros(sim.n, dtype=np.int64)
        self._cpu = np.asarray(sim.cpu).copy()
        self._onsets = onsets
        self._sum_max = int(np.asarray(sim.max).sum())
        self._reserve = sim.scenario.host.reserve
        self._oom_start = np.asarray(sim.oom_kills).copy()
        self._pending = np.full(sim.n, np.nan)  # onset time of an uncovered demand step, per guest
        self._reactions: list[npt.NDArray[np.float64]] = []
        self._last_time = sim.time
        self.reclaimed_byte_s = 0.0
        self.uncredited_byte_s = 0.0
        self.pressure_vm_s = 0.0
        self.host_overrun_s = 0.0
        self.cpu_storm_vm_s = 0.0
        self.steps = 0
        self.cpu_s = 0.0
        self.ticks = 0
        duration = sim.scenario.run.duration
        n_days = max(1, math.ceil(duration / DAY_S))
        self._bursts = burst_days(onsets, sim.scenario.run.step, n_days) if duration > DAY_S else []
        self._day_reclaimed = np.zeros(n_days)
        self._day_pressure = np.zeros(n_days)
        self._day_overrun = np.zeros(n_days)
        self._day_kills = np.zeros(n_days, dtype=np.int64)
        self._kills = int(self._oom_start.sum())

    def record(self) -> None:
        sim = self.sim
        now = sim.time
        dt = now - self._last_time
        day = min(int(self._last_time // DAY_S), len(self._day_pressure) - 1)  # the step's start
        self._last_time = now
        charged_sum = self.charged_sum()
        reclaimed = (self._sum_max - charged_sum) * dt
        self.reclaimed_byte_s += reclaimed
        self._day_reclaimed[day] += reclaimed
        self.uncredited_byte_s += (charged_sum - int(sim.allocation.sum())) * dt
        pressure = sim.under_pressure
        pressed = int(pressure.sum()) * dt
        self.pressure_vm_s += pressed
        self._day_pressure[day] += pressed
        if sim.host_available < self._reserve:
            self.host_overrun_s += dt
            self._day_overrun[day] += dt
        kills = int(np.asarray(sim.oom_kills).sum())
        self._day_kills[day] += kills - self._kills
        self._kills = kills
        cpu = sim.cpu
        if dt > 0:
            self.cpu_storm_vm_s += int(((cpu - self._cpu) >= self._storm_ns * dt).sum()) * dt
        np.copyto(self._cpu, cpu)
        k = self.steps = self.steps + 1
        if k < self._onsets.shape[0]:
            new = self._onsets[k] & np.isnan(self._pending)
            if new.any():
                self._pending[new] = now
        waiting = ~np.isnan(self._pending)
        if waiting.any():
            done = waiting & ~pressure
            if done.any():
                self._reactions.append(now - self._pending[done])
                self._pending[done] = np.nan

    def charged_sum(self) -> int:
        """Bytes charged to the guests now: each at least what its intended demand needs."""
        row = min(round(self.sim.time / self.sim.scenario.run.step), len(self._need) - 1)
        np.maximum(self._need[row], self.sim.allocation, out=self._charged)
        return int(self._charged.sum())

    def add_tick(self, cpu_s: float) -> None:
        self.cpu_s += cpu_s
        self.ticks += 1

    def reactions(self) -> npt.NDArray[np.float64]:
        """Every reaction time; a step still uncovered at the end counts until the end (censored)."""
        parts = list(self._reactions)
        open_ = self._pending[~np.isnan(self._pending)]
        if open_.size:
            parts.append(self._last_time - open_)
        return np.concatenate(parts) if parts else np.zeros(0)

    def result(self, scenario: str, policy: str) -> Metrics:
        reactions = self.reactions()
        return Metrics(
            scenario=scenario,
            policy=policy,
            reclaimed_gib_h=self.reclaimed_byte_s / GiB / SECONDS_PER_HOUR,
            oracle_efficiency=None,
            pressure_vm_s=self.pressure_vm_s,
            oom_kills=int((np.asarray(self.sim.oom_kills) - self._oom_start).sum()),
            host_overrun_s=self.host_overrun_s,
            reaction_p50_s=percentile(reactions, 50),
            reaction_p99_s=percentile(reactions, 99),
            cpu_per_tick_ms=self.cpu_s / self.ticks * 1000.0 if self.ticks else None,
            cpu_storm_vm_s=self.cpu_storm_vm_s,
            uncredited_gib_h=self.uncredited_byte_s / GiB / SECONDS_PER_HOUR,
            days=self.days(),
        )

    def days(self) -> tuple[Day, ...]:
        """The run per day, when it lasts more than one (else empty)."""
        return tuple(
            Day(
                day=i + 1,
                bursts=bursts,
                reclaimed_gib_h=float(self._day_reclaimed[i]) / GiB / SECONDS_PER_HOUR,
                pressure_vm_s=float(self._day_pressure[i]),
                oom_kills=int(self._day_kills[i]),
                host_overrun_s=float(self._day_overrun[i]),
            )
            for i, bursts in enumerate(self._bursts)
        )
