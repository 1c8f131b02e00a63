"""Demand shapes: how much anonymous memory a simulated guest's workload needs over time.

Each shape is a frozen value; :func:`sample` turns it into a NumPy array of bytes over a grid of times.
The engine samples every guest once, over the whole scenario, before the first step, so the per-step path
only indexes a precomputed table. Randomness (spike arrivals, noise) comes from a generator the caller seeds
per guest, so a scenario is deterministic given its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_HOUR = 3_600.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Constant:
    """The same demand all the time (an idle or steady service)."""

    level: int


@dataclass(frozen=True, slots=True)
class Steps:
    """Piecewise constant: ``points`` are (second, bytes), each level holds until the next point."""

    points: tuple[tuple[float, int], ...]


@dataclass(frozen=True, slots=True)
class Ramp:
    """From ``start_level`` at ``start`` seconds, linearly to ``end_level`` over ``length`` s, then hold."""

    start_level: int
    end_level: int
    start: float
    length: float


@dataclass(frozen=True, slots=True)
class Sine:
    """``mean + amplitude * sin(2π (t - phase) / period)``."""

    mean: int
    amplitude: int
    period: float
    phase: float = 0.0


@dataclass(frozen=True, slots=True)
class Diurnal:
    """An office-hours day: ``low`` at night, ``high`` at ``peak_hour``, a smooth but pointed bump."""

    low: int
    high: int
    peak_hour: float = 14.0
    period: float = SECONDS_PER_DAY


@dataclass(frozen=True, slots=True)
class Spikes:
    """``base`` with bursts of ``height`` lasting ``length`` s, arriving every ``every`` s on average
    (Poisson arrivals, so bursts are not predictable from the period)."""

    base: int
    height: int
    every: float
    length: float


#: How a trace is read between its rows: a straight line to the next row, or the previous row's value.
Interpolation = Literal["linear", "hold"]
INTERPOLATIONS: tuple[Interpolation, ...] = ("linear", "hold")


@dataclass(frozen=True, slots=True)
class Trace:
    """Recorded (second, bytes) rows; ``interpolate`` linear or hold-previous between rows."""

    times: tuple[float, ...]
    values: tuple[int, ...]
    source: str = ""
    interpolate: Interpolation = "linear"


Shape = Constant | Steps | Ramp | Sine | Diurnal | Spikes | Trace
SHAPE_NAMES: tuple[str, ...] = ("constant", "steps", "ramp", "sine", "diurnal", "spikes", "trace")


@dataclass(frozen=True, slots=True)
class Demand:
    """A shape plus optional smooth multiplicative noise (``noise`` = standard deviation as a fraction)."""

    shape: Shape
    noise: float = 0.0


def _shape_values(shape: Shape, t: FloatArray, horizon: float, rng: np.random.Generator) -> FloatArray:
    """The noiseless shape at times ``t`` (seconds); ``horizon`` bounds random arrivals."""
    match shape:
        case Constant(level):
            return np.full(t.shape, float(level))
        case Steps(points):
            at = np.array([p[0] for p in points], dtype=np.float64)
            levels = np.array([p[1] for p in points], dtype=np.float64)
            idx = np.searchsorted(at, t, side="right") - 1
            return levels[np.clip(idx, 0, len(levels) - 1)]
        case Ramp(start_level, end_level, start, length):
            frac = np.clip((t - start) / length, 0.0, 1.0) if length > 0 else (t >= start).astype(float)
            return start_level + (end_level - start_level) * frac
        case Sine(mean, amplitude, period, phase):
            return mean + amplitude * np.sin(2.0 * np.pi * (t - phase) / period)
        case Diurnal(low, high, peak_hour, period):
            angle = 2.0 * np.pi * (t - peak_hour * SECONDS_PER_HOUR) / period
            bump = ((1.0 + np.cos(angle)) / 2.0) ** 2
            return low + (high - low) * bump
        case Spikes(base, height, every, length):
            # Bursts never overlap: the last start at or before t is the only one t can be inside.
            starts = np.concatenate(([-np.inf], _spike_starts(every, length, horizon, rng)))
            last = starts[np.searchsorted(starts, t, side="right") - 1]
            return base + height * (t < last + length).astype(np.float64)
        case Trace(times, values, _, interpolate):
            xs = np.asarray(times, dtype=np.float64)
            ys = np.asarray(values, dtype=np.float64)
            if interpolate == "hold":
                idx = np.clip(np.searchsorted(xs, t, side="right") - 1, 0, len(ys) - 1)
                return ys[idx]
            return np.interp(t, xs, ys)
    raise TypeError(f"not a demand shape: {shape!r}")  # pragma: no cover - exhaustive match


def _spike_starts(every: float, length: float, horizon: float, rng: np.random.Generator) -> FloatArray:
    """Start times of the bursts before ``horizon``: each gap after a burst is exponential (Poisson).

    Gaps are drawn in batches (the same draws, in the same order, as one at a time), so the cost is one
    NumPy call per batch and not a Python loop per burst; the count is bounded by ``horizon / length``.
    """
    batch = max(16, int(horizon / (every + length)) + 16)
    parts: list[FloatArray] = []
    start = 0.0
    while True:
        gaps = rng.exponential(every, batch)
        starts = start + np.cumsum(gaps) + length * np.arange(batch)
        parts.append(starts[starts < horizon])
        if starts[-1] >= horizon:
            return np.concatenate(parts)
        start = float(starts[-1]) + length


def sample(
    demand: Demand, times: FloatArray, rng: np.random.Generator, *, horizon: float, noise_knot_s: float
) -> npt.NDArray[np.int64]:
    """Demand in whole bytes (never negative) at each of ``times``.

    ``horizon`` is the scenario length: random events are drawn over it whatever ``times`` holds, so the
    same seed gives the same bursts. Noise is drawn at knots ``noise_knot_s`` apart and interpolated, so it
    wanders like a real workload instead of jumping every second.
    """
    values = _shape_values(demand.shape, times, horizon, rng)
    if demand.noise > 0.0:
        knots = np.arange(0.0, horizon + 2 * noise_knot_s, noise_knot_s)
        factors = 1.0 + demand.noise * rng.standard_normal(knots.shape)
        values = values * np.interp(times, knots, factors)
    return np.maximum(np.rint(values), 0.0).astype(np.int64)
