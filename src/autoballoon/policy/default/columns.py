"""The managed VMs' estimates as the allocation's columns: one NumPy array per figure, one entry per VM."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from autoballoon.policy.default.arrays import F64, I64, Bools


class Columns(NamedTuple):
    """The managed VMs' figures the allocation works on, one NumPy array each (index = VM): made all at
    once by :func:`.estimate.estimate`, and the tiers (:func:`~.tiers.tiers` adds the OOM floor, need and
    want)."""

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
    cache_step: I64  # the most a voluntary shrink may take this tick (see :mod:`.refault`)
    dead_band: I64
    keep: I64  # the size a shrink into its cache was stepped back to (see :mod:`.refault`)
    oom_floor: I64  # the tiers (see :func:`tiers`)
    need: I64
    want: I64
    #: The want a burst the guest's profile expects soon asks for (see :func:`.profile.anticipate`),
    #: 0 where none; empty until then.
    anticipated: I64 = np.zeros(0, dtype=np.int64)
