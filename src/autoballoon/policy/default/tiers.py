"""The three tiers of every managed VM: its OOM floor, its need and its want.

Per VM, as :func:`tiers` computes them for all VMs at once::

    growth    = trend * max(trend_lookahead, latency)
    margin    = oom_margin + oom_margin_fraction * ceiling
    rising    = max(growth, rise * latency)
    oom_floor = clamp(align_up(used + rising + margin), floor, ceiling)       without autodeflate
              = clamp(align_up(used + growth + margin), floor, ceiling)       with
                at least least_oom_floor (but never above what the guest has, if it swaps)
    headroom  = min_headroom + oom_margin_fraction * ceiling
    need      = clamp(align_up(demand + growth + headroom), floor, ceiling), at least least_need
    room      = max(headroom, buffer * demand, rate * latency)                    with autodeflate
              = max(headroom, buffer * demand,
                    max(growth_allowance * latency, rate * latency, jump, prior)
                    + margin)                                                      without
    want      = clamp(align_up(demand + rising + room), need, ceiling), at least oom_floor
                and at least keep (the size a shrink into its cache was stepped back to)
              = ceiling                                         with free page reporting

where ``rise`` is the growth rate the last stats report showed, ``trend`` the growth rate of the
ramp going on now (the last two stats reports agree on it), ``rate`` the fastest steady growth
remembered (fading), and ``prior = min(jump_prior_fraction * ceiling, jump_prior_max)``. The growth
of a ramp in progress is projected ahead of the guest; once it stops, only the room remembers it.
A guest without autodeflate is OOM-killed by a burst that outruns its room, so its room holds what
it can bring within one reaction time by any way the estimate knows (a steady growth, its own
jumps, a first burst) on top of the MemAvailable the OOM killer fires with. On the rig, a 512 MiB
guest with N MiB available survived a 40 MiB/s ramp for N = 128 and an allocation at once of up to
0.75 N, with a daemon ticking every 2 s on stats every second. A guest with autodeflate takes
balloon pages back by itself when a burst outruns the daemon (120 to 330 MiB within 2 s on the rig,
no OOM kill), and the policy then follows it up; its room is the headroom, the buffer and its
remembered growth. A guest with free page reporting gives the host its free pages without the
balloon, which would only cap it.
"""

from __future__ import annotations

import numpy as np

from autoballoon.policy.default.arrays import I64, align_up, clip
from autoballoon.policy.default.columns import Columns
from autoballoon.tunables import Tunables


def tiers(c: Columns, t: Tunables) -> tuple[I64, I64, I64]:
    """Each managed VM's OOM floor, need and want, all at once (the rules are the module's doc)."""
    align = t.target_align_bytes
    ceiling, floor, demand = c.ceiling, c.floor, c.demand
    # What the ramp going on now adds before the daemon can react again: demand is read from stats up to
    # a period old and a cut lands a reaction time later, so even the OOM floor holds that. The OOM
    # floor is what the guest uses now, that growth and the margin (the demand is smoothed and boosted
    # by pressure: it sizes the need and the want, which a short host may cut; the OOM floor is what it
    # may not).
    scaled = (ceiling * t.oom_margin_fraction).astype(np.int64)  # grows with the guest (see Tunables)
    margin = t.oom_margin_bytes + scaled
    headroom = t.min_headroom_bytes + scaled
    growth = (c.trend * np.maximum(c.latency, t.trend_lookahead_s)).astype(np.int64)
    # A rise the last report showed may be a ramp's start, which the next report confirms (and the
    # growth above then covers) a reaction time later: a guest without autodeflate at its OOM floor
    # would be killed meanwhile (on the rig, a 20 MiB/s ramp ate a 58 MiB margin in under 3 s), so its
    # OOM floor holds one reaction time of that rise.
    rising = np.maximum(growth, (c.rise_rate * c.latency).astype(np.int64))
    oom_floor = np.maximum(
        clip(align_up(c.used + np.where(c.exposed, rising, growth) + margin, align), floor, ceiling),
        c.least_oom_floor,
    )
    # A guest that swaps is short of memory before it is OOM-killed, and what it has resident fills
    # what it is given: its OOM floor is never above what it has (it is not grown from the reserve).
    oom_floor = np.where(c.swaps, np.minimum(oom_floor, np.maximum(c.has, floor)), oom_floor)
    need = clip(align_up(np.maximum(demand + growth + headroom, c.least_need), align), floor, ceiling)
    burst = np.maximum.reduce(
        [
            (c.latency * np.maximum(c.rate, t.growth_allowance_bytes_per_s)).astype(np.int64),
            c.jump,
            np.minimum((ceiling * t.jump_prior_fraction).astype(np.int64), t.jump_prior_max_bytes),
        ]
    )
    # The room kept above what the demand and its growth take: the headroom, the buffer, and for a guest
    # without autodeflate a burst on top of the margin the OOM killer fires with.
    room = np.maximum.reduce(
        [
            headroom,
            (demand * c.buffer).astype(np.int64),
            (c.latency * c.rate).astype(np.int64),
            np.where(c.exposed, burst + margin, 0),
        ]
    )
    # The want holds that rise too (with autodeflate only there: one report's rise may be a single
    # jump, which a short host need not pay for).
    want = np.maximum(clip(align_up(demand + rising + room, align), need, ceiling), oom_floor)
    # A shrink into its page cache that made it fault is stepped back: it keeps that size (a want, which
    # a short host still cuts: the host's memory comes before an application's speed).
    want = np.maximum(want, clip(c.keep, floor, ceiling))
    # A guest with free page reporting already gives the host its free memory, and a balloon would only
    # cap it: its want is its ceiling, so it is shrunk only when the host is short (to its need).
    want = np.where(c.reports, ceiling, want)
    # Blind to its demand: never below what it has, and its want is its ceiling.
    least = clip(c.least_need, floor, ceiling)
    oom_floor = np.where(c.blind, least, oom_floor)
    need = np.where(c.blind, least, need)
    want = np.where(c.blind, ceiling, want)
    return oom_floor, need, want
