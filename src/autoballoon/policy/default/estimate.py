"""Phase 2, estimate: each managed VM's demand, and what its three tiers of memory are made of.

The demand rises at once, decays slowly, and is raised by pressure (swap-in, major faults, low
MemAvailable, a balloon that deflated itself). The tiers, sized for all VMs at once by :mod:`.tiers`,
are its *OOM floor* (below it the guest is OOM-killed), its *need* (below it the guest is under
pressure) and its *want* (the need plus a cushion for what the guest can allocate within one reaction
time of the daemon). This module also decides how far the VM's target may shrink this tick.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from autoballoon.model import GuestSnapshot, Status
from autoballoon.policy.default.classify import Verdict
from autoballoon.policy.default.state import GuestRecord
from autoballoon.tunables import Tunables


class Estimate(NamedTuple):
    """A managed VM's demand, what its tiers are made of (:func:`tiers` sizes them for all VMs at once)
    and how its target may move this tick, and what to remember of its stats (:class:`GuestRecord` has
    the same fields).

    It is the VM's row of the allocation's columns (:class:`~.allocate.Columns`)."""

    verdict: Verdict
    target: int
    actual: int  # the balloon's size (its target if it never answered)
    floor: int
    ceiling: int
    used: int
    demand: int
    pressure: bool
    blind: bool  # it lost its stats: never shrunk, its want is its ceiling
    urgent: bool  # under pressure or deflating itself: its growth is paid first
    exposed: bool  # no autodeflate: a burst beyond its room is an OOM kill
    reports: bool  # free page reporting: the host gets its free memory back without the balloon
    swaps: bool  # it has swap (it has swapped out since it booted): short of memory, it swaps first
    latency: float  # its reaction time, seconds
    buffer: float  # the least share of demand its cushion holds
    shares: float  # its weight when the host is short
    least_need: int  # what it must keep whatever its demand says: all it has while under pressure
    least_oom_floor: int  # what it took back by itself (autodeflate): it needed that much
    may_shrink: bool  # see :func:`shrink_allowance`
    step: int  # the most it may shrink this tick
    reserved: int
    stats_time: float | None
    swap_in: int | None
    major_faults: int | None
    rise_rate: float
    trend: float
    rate: float
    jump: int
    pressure_at: float | None
    stats_actual: int | None


def reaction_time(g: GuestSnapshot, t: Tunables) -> float:
    """Seconds from a guest allocating memory to its balloon having deflated for it, at worst: the
    allocation lands just after a stats report, shows in the next one, is read at the next tick and
    then actuated."""
    period = g.balloon.stats_period or t.default_stats_period_s
    return t.interval_s + period + t.actuation_s


def kernel_reserved(g: GuestSnapshot, rec: GuestRecord, resting: bool) -> int:
    """Memory the guest's kernel keeps out of MemTotal (its code, the page structures of all its RAM):
    a target must cover it as well as ``used``, or the guest has less available than the policy thinks
    (about 30 MiB of a 512 MiB Linux guest). MemTotal is the balloon's size less this when the balloon
    shrinks MemTotal, and the boot size less this when it does not (autodeflate, a balloon at max);
    otherwise, only a balloon at rest since the stats were taken tells it, so it is remembered."""
    total = g.stats.total
    actual = g.actual_bytes
    if total is None or actual is None or total > g.max_bytes:
        return rec.reserved
    if g.balloon.autodeflate or actual >= g.max_bytes:
        return g.max_bytes - total
    if resting and total <= actual:
        return actual - total
    return rec.reserved


def shrink_allowance(
    v: Verdict, stats_time: float | None, blind: bool, now: float, t: Tunables
) -> tuple[bool, int]:
    """Whether a managed VM may shrink this tick, and by at most how much (see :func:`move`): not
    within the cooldown after a grow, not twice on the same stats report (the next step is judged on
    what the last one did), not while the guard holds it, never without fresh stats; by its share of
    the shrink rate over the time since the last look, or the least step."""
    rec = v.record
    cooling = rec.last_grow is not None and now - rec.last_grow < t.shrink_cooldown_after_grow_s
    unseen = rec.shrink_wall is not None and (stats_time or 0.0) <= rec.shrink_wall
    dt = now - rec.seen_time if rec.seen_time is not None and now > rec.seen_time else t.interval_s
    may_shrink = not (cooling or unseen or v.shrink_hold or blind)
    return may_shrink, max(t.shrink_min_step_bytes, int(v.ceiling * t.shrink_rate_per_s * dt))


def _blind(v: Verdict, now: float, t: Tunables) -> Estimate:
    """A VM that lost its stats: what it has is the least it keeps (see :func:`.tiers.tiers`), and it
    remembers what it knew."""
    g, rec = v.guest, v.record
    target = g.target_bytes
    actual = g.actual_bytes if g.actual_bytes is not None else target
    held = min(max(target, actual), v.ceiling)
    may_shrink, step = shrink_allowance(v, rec.stats_time, True, now, t)
    return Estimate(
        verdict=v, target=target, actual=actual, floor=v.floor, ceiling=v.ceiling, used=rec.used or 0,
        demand=rec.demand or 0, pressure=False, blind=True, urgent=v.self_deflated,
        exposed=not g.balloon.autodeflate, reports=g.mechanism == "report", swaps=False,
        latency=reaction_time(g, t), buffer=0.0, shares=_shares(v, t), least_need=held, least_oom_floor=held,
        may_shrink=may_shrink, step=step, reserved=rec.reserved, stats_time=rec.stats_time,
        swap_in=rec.swap_in, major_faults=rec.major_faults, rise_rate=0.0, trend=0.0, rate=rec.rate,
        jump=rec.jump, pressure_at=rec.pressure_at, stats_actual=rec.stats_actual,
    )  # fmt: skip


def _shares(v: Verdict, t: Tunables) -> float:
    return float(v.policy.shares if v.policy.shares is not None else t.default_shares)


def _used(v: Verdict, actual: int, t: Tunables) -> tuple[int, int, int | None]:
    """What the guest uses (the kernel's reserved memory included), that reserve, and the balloon size
    its stats were taken against."""
    g, rec, stats = v.guest, v.record, v.guest.stats
    still = rec.seen_actual is not None and abs(actual - rec.seen_actual) <= t.stuck_tolerance_bytes
    stats_wall = stats.last_update or 0.0
    # The balloon has not moved since the last look, and these stats were taken after it: they agree.
    resting = still and rec.seen_wall is not None and stats_wall >= rec.seen_wall
    reserved = kernel_reserved(g, rec, resting)
    used = (g.used_bytes or 0) + reserved
    # With autodeflate (and on Windows, whose MemTotal stays at max too) ``used`` subtracts the balloon,
    # which libvirt reports as it is now while the stats are up to a period old: a balloon that moved in
    # between would show as a change in ``used``. Stats are read against the balloon as it was when they
    # were taken: the last look's when they are older than it, and that same balloon for as long as they
    # are the stats on hand. (Read against the last look only, a Windows guest reporting every 10 s had
    # each grow counted as use again on the next tick, and grew itself to its max: 228 reversals an hour
    # in the demo.)
    follows_balloon = g.balloon.autodeflate or g.os_type == "windows"
    stats_actual = rec.stats_actual
    if stats.last_update != rec.stats_time or stats_actual is None:
        older = rec.seen_actual is not None and rec.seen_wall is not None and stats_wall < rec.seen_wall
        stats_actual = rec.seen_actual if older else actual
    if follows_balloon and stats_actual is not None:
        used = max(0, used - (actual - stats_actual))
    return used, reserved, stats_actual


class _Growth(NamedTuple):
    """What the stats since the last report say of the guest's growth and of swapping."""

    stats_time: float | None
    rise_rate: float
    trend: float
    rate: float
    jump: int
    boost: int  # bytes swapped in fast enough to count as pressure (1: major faults did)


def _growth(v: Verdict, used: int, now: float, t: Tunables) -> _Growth:
    rec, stats = v.record, v.guest.stats
    # Rates are per second of *stats* time: a guest polled every 10 s shows 10 s of change at once.
    stats_time = stats.last_update
    sdt = stats_time - rec.stats_time if stats_time and rec.stats_time else 0.0
    fresh = sdt > 0
    if not fresh and rec.stats_time:
        stats_time = rec.stats_time  # nothing new: keep measuring from the last report
    dt = now - rec.seen_time if rec.seen_time is not None else 0.0
    rise_rate, trend, rate, jump = rec.rise_rate, rec.trend, rec.rate, rec.jump
    if rate and dt > 0:
        rate *= 0.5 ** (dt / t.rate_half_life_s)
    if jump and dt > 0:
        jump = int(jump * 0.5 ** (dt / t.jump_half_life_s))
    boost = 0
    if fresh:
        rise = used - rec.used if rec.used is not None else 0
        rise_rate = rise / sdt if rise > 0 else 0.0
        if rise >= t.jump_min_bytes:
            jump = max(jump, rise)
        # A rate counts once two reports in a row show it: one jump is not a ramp (the jump is
        # remembered above, and the cushion keeps room for another like it). The ramp going on now is
        # projected ahead by the tiers (see :func:`.tiers.tiers`), not into the demand: the demand decays
        # slowly, and a ramp that has stopped needs no more room ahead of it.
        trend = min(rise_rate, rec.rise_rate)
        rate = max(rate, trend)
        if rec.swap_in is not None and stats.swap_in is not None and stats.swap_in > rec.swap_in:
            swapped = stats.swap_in - rec.swap_in
            if swapped / sdt > t.swap_in_pressure_bytes_per_s:
                boost = swapped
        if (
            rec.major_faults is not None
            and stats.major_faults is not None
            and (stats.major_faults - rec.major_faults) / sdt > t.major_fault_pressure_per_s
        ):
            boost = max(boost, 1)
    return _Growth(stats_time, rise_rate, trend, rate, jump, boost)


def estimate(v: Verdict, now: float, wall: float, t: Tunables) -> Estimate:
    """Demand and tiers of one managed VM, from its stats and what it remembered."""
    if v.status != Status.MANAGED:
        return _blind(v, now, t)
    g, rec, stats = v.guest, v.record, v.guest.stats
    actual = g.actual_bytes if g.actual_bytes is not None else g.target_bytes
    used, reserved, stats_actual = _used(v, actual, t)
    growth = _growth(v, used, now, t)
    raw = used
    signal = (stats.available or 0) < t.low_available_bytes or v.self_deflated
    if growth.boost:
        signal = True
        raw += growth.boost + int(v.ceiling * t.pressure_boost_fraction)
    pressure_at = now if signal else rec.pressure_at
    pressure = pressure_at is not None and now - pressure_at < t.pressure_hold_s
    dt = now - rec.seen_time if rec.seen_time is not None else 0.0
    if rec.demand is None or raw >= rec.demand or dt <= 0:
        demand = raw
    else:
        demand = raw + int((rec.demand - raw) * math.exp(-dt / t.demand_decay_s))
    ceiling = v.ceiling
    least_need = least_oom_floor = 0
    if v.self_deflated:  # it ran past its memory: what it took back, and more, since it is still short
        least_need = min(actual + int(ceiling * t.self_deflate_boost_fraction), ceiling)
        least_oom_floor = min(actual, ceiling)
    if pressure:  # never less than it has while it is short
        least_need = max(least_need, min(g.target_bytes, ceiling))
    may_shrink, step = shrink_allowance(v, growth.stats_time, False, now, t)
    return Estimate(
        verdict=v, target=g.target_bytes, actual=actual, floor=v.floor, ceiling=ceiling, used=used,
        demand=demand, pressure=pressure, blind=False, urgent=pressure or v.self_deflated,
        exposed=not g.balloon.autodeflate, reports=g.mechanism == "report", swaps=(stats.swap_out or 0) > 0,
        latency=reaction_time(g, t), buffer=v.policy.buffer if v.policy.buffer is not None else t.buffer,
        shares=_shares(v, t), least_need=least_need, least_oom_floor=least_oom_floor, may_shrink=may_shrink,
        step=step, reserved=reserved, stats_time=growth.stats_time, swap_in=stats.swap_in,
        major_faults=stats.major_faults, rise_rate=growth.rise_rate, trend=growth.trend, rate=growth.rate,
        jump=growth.jump, pressure_at=pressure_at, stats_actual=stats_actual,
    )  # fmt: skip
