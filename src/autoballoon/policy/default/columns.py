"""The managed VMs' estimates as the allocation's columns: one NumPy array per figure, one entry per VM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from autoballoon.policy.default.arrays import F64, I64, Bools
from autoballoon.policy.default.estimate import Estimate
from autoballoon.tunables import Tunables


class Columns(NamedTuple):
    """The managed VMs' figures the allocation works on, one NumPy array each (index = VM): the
    :class:`Estimate` fields of the same names (:func:`columns`), what is derived from them, and the
    tiers (:func:`~.tiers.tiers` adds the OOM floor, need and want)."""

    target: I64
    actual: I64
    floor: I64
    ceiling: I64
    demand: I64
    used: I64
    latency: F64  # reaction time, seconds
    rise_rate: F64  # the growth the last stats report showed, bytes/s (a ramp's start, or one jump)
    trend: F64  # the steady growth going on now, bytes/s
    rate: F64  # remembered steady growth rate, bytes/s
    jump: I64  # remembered largest jump
    buffer: F64
    least_need: I64
    least_oom_floor: I64
    has: I64  # max(target, actual): what it has or is promised
    shares: list[float]
    pressure: Bools
    blind: Bools  # lost its stats: never shrunk
    urgent: Bools  # under pressure or deflating itself: paid first
    exposed: Bools  # no autodeflate: a burst beyond its room is an OOM kill
    reports: Bools  # free page reporting: the host gets its free memory back without the balloon
    swaps: Bools  # it has swapped out since it booted
    may_shrink: Bools
    step: I64  # the most it may shrink this tick
    dead_band: I64
    oom_floor: I64  # the tiers (see :func:`tiers`)
    need: I64
    want: I64


def columns(estimates: Sequence[Estimate], t: Tunables) -> Columns:
    """The allocation's columns from the estimates (one row per VM); the tiers are left empty."""
    target = np.array([e.target for e in estimates], dtype=np.int64)
    actual = np.array([e.actual for e in estimates], dtype=np.int64)
    ceiling = np.array([e.ceiling for e in estimates], dtype=np.int64)
    empty = np.zeros(len(estimates), dtype=np.int64)
    return Columns(
        target=target,
        actual=actual,
        ceiling=ceiling,
        floor=np.array([e.floor for e in estimates], dtype=np.int64),
        demand=np.array([e.demand for e in estimates], dtype=np.int64),
        used=np.array([e.used for e in estimates], dtype=np.int64),
        latency=np.array([e.latency for e in estimates], dtype=np.float64),
        rise_rate=np.array([e.rise_rate for e in estimates], dtype=np.float64),
        trend=np.array([e.trend for e in estimates], dtype=np.float64),
        rate=np.array([e.rate for e in estimates], dtype=np.float64),
        jump=np.array([e.jump for e in estimates], dtype=np.int64),
        buffer=np.array([e.buffer for e in estimates], dtype=np.float64),
        least_need=np.array([e.least_need for e in estimates], dtype=np.int64),
        least_oom_floor=np.array([e.least_oom_floor for e in estimates], dtype=np.int64),
        pressure=np.array([e.pressure for e in estimates], dtype=np.bool_),
        blind=np.array([e.blind for e in estimates], dtype=np.bool_),
        urgent=np.array([e.urgent for e in estimates], dtype=np.bool_),
        exposed=np.array([e.exposed for e in estimates], dtype=np.bool_),
        reports=np.array([e.reports for e in estimates], dtype=np.bool_),
        swaps=np.array([e.swaps for e in estimates], dtype=np.bool_),
        may_shrink=np.array([e.may_shrink for e in estimates], dtype=np.bool_),
        step=np.array([e.step for e in estimates], dtype=np.int64),
        has=np.maximum(target, actual),
        shares=[e.shares for e in estimates],
        dead_band=np.maximum(
            t.shrink_dead_band_bytes, (ceiling * t.shrink_dead_band_fraction).astype(np.int64)
        ),
        oom_floor=empty,
        need=empty,
        want=empty,
    )
