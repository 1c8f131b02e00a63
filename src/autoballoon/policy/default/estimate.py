"""Phase 2, estimate: each managed VM's demand, and what its three tiers of memory are made of.

The demand rises at once, decays slowly, and is raised by pressure (swap-in, major faults, low
MemAvailable, a balloon that deflated itself). The tiers, sized for all VMs at once by :mod:`.tiers`,
are its *OOM floor* (below it the guest is OOM-killed), its *need* (below it the guest is under
pressure) and its *want* (the need plus a cushion for what the guest can allocate within one reaction
time of the daemon). This module also decides how far the VM's target may shrink this tick.

Every figure is computed for all managed VMs at once, one NumPy column per figure (the allocation's
:class:`~.columns.Columns`): a decision over thousands of VMs is a few dozen array operations, not a
Python function call per VM. A figure that may be unknown (``None``) is read as a column of values with
a column saying where it is known (:func:`.arrays.known_ints`, :func:`.arrays.known_floats`); the rules
below are the per-VM rules, written once for all VMs. Powers and exponentials are taken with Python's
own float functions (:func:`_each`): NumPy's vectorised ones may differ from them in the last bit, and
the same snapshot and state must give the same plan whichever code computed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from autoballoon.model import GuestSnapshot, Status
from autoballoon.policy.default import refault
from autoballoon.policy.default.arrays import F64, I64, Bools, known_floats, known_ints, optional, transpose
from autoballoon.policy.default.classify import Verdict
from autoballoon.policy.default.columns import Columns
from autoballoon.tunables import Tunables

_T = TypeVar("_T")


class Estimates(NamedTuple):
    """The managed VMs' estimates: the allocation's columns (the tiers left empty) and, per VM, what only
    the emit phase reads: what to remember of its stats (:class:`~.state.GuestRecord` has the same
    fields)."""

    verdicts: list[Verdict]
    columns: Columns
    autodeflate: Bools  # it takes balloon pages back by itself: a burst takes memory from the host
    reserved: list[int]
    used_doubt: list[int]
    stats_time: list[float | None]
    swap_in: list[int | None]
    major_faults: list[int | None]
    pressure_at: list[float | None]
    stats_actual: list[int | None]
    probes: list[refault.Probe]  # their shrinking into their caches, judged at this report
    stepped_back: list[int]  # the VMs (indices) this report stepped back (see :mod:`.refault`)
    accuracy: F64  # each open probe's accuracy at this report (NaN: none judged)


def reaction_time(g: GuestSnapshot, t: Tunables) -> float:
    """Seconds from a guest allocating memory to its balloon having deflated for it, at worst: the
    allocation lands just after a stats report, shows in the next one, is read at the next tick and
    then actuated."""
    period = g.balloon.stats_period or t.default_stats_period_s
    return t.interval_s + period + t.actuation_s


def _column(xs: Iterable[float], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """Known values (none is ``None``) as a column."""
    return np.fromiter(xs, dtype=dtype)


def _each(f: Callable[[float], float], x: F64, where: Bools) -> F64:
    """``f`` of every value where ``where`` (1.0 elsewhere), with Python's float functions (see the
    module's doc), and only where the per-VM rule takes it: elsewhere it may overflow."""
    ys = (f(v) if w else 1.0 for v, w in zip(x.tolist(), where.tolist(), strict=True))
    return np.fromiter(ys, dtype=np.float64, count=len(x))


def _halves(x: F64, where: Bools) -> F64:
    """``0.5 ** x`` where ``where``: what is left after ``x`` half-lives."""
    return _each(lambda v: 0.5**v, x, where)


def _differs(a: Sequence[float | None], b: Sequence[float | None]) -> Bools:
    """``a != b`` for each pair, ``None`` equal only to ``None``."""
    return np.array([x != y for x, y in zip(a, b, strict=True)], dtype=np.bool_)


class _Guests(NamedTuple):
    """What the estimate reads of the VMs' snapshots, verdicts and records, one column per figure."""

    target: I64
    actual: I64  # the balloon's size (its target if it never answered)
    has_actual: Bools
    max_bytes: I64
    floor: I64
    ceiling: I64
    autodeflate: Bools
    follows_balloon: Bools  # autodeflate or Windows: ``used`` subtracts the balloon (see :func:`_used`)
    blind: Bools
    self_deflated: Bools
    shrink_hold: Bools
    total: I64
    has_total: Bools
    used_bytes: I64
    available: I64
    swap_out: I64
    swap_in: I64
    has_swap_in: Bools
    major_faults: I64
    has_major_faults: Bools
    last_update: F64  # stats.last_update or 0.0
    stats_changed: Bools  # stats.last_update != record.stats_time
    free: I64  # MemFree, 0 if unknown
    disk_read: I64  # bytes read from its disks (host-side), 0 if unknown
    has_disk_read: Bools


class _Records(NamedTuple):
    """What the VMs remembered, one column per figure (see :class:`~.state.GuestRecord`)."""

    seen_time: F64
    has_seen_time: Bools
    seen_actual: I64
    has_seen_actual: Bools
    seen_wall: F64
    has_seen_wall: Bools
    demand: I64
    has_demand: Bools
    used: I64
    has_used: Bools
    used_doubt: I64
    reserved: I64
    stats_time: F64  # record.stats_time or 0.0
    swap_in: I64
    has_swap_in: Bools
    major_faults: I64
    has_major_faults: Bools
    rise_rate: F64
    trend: F64
    rate: F64
    jump: I64
    pressure_at: F64
    has_pressure_at: Bools
    stats_actual: I64
    has_stats_actual: Bools
    last_grow: F64
    has_last_grow: Bools
    shrink_wall: F64
    has_shrink_wall: Bools


_GUEST = attrgetter(
    "target_bytes", "actual_bytes", "max_bytes", "balloon.autodeflate", "os_type", "used_bytes",
    "stats.total", "stats.available", "stats.swap_out", "stats.swap_in", "stats.major_faults",
    "stats.last_update", "stats.free", "disk_read_bytes",
)  # fmt: skip
_VERDICT = attrgetter("floor", "ceiling", "status", "self_deflated", "shrink_hold", "record.stats_time")


def _guests(vs: Sequence[Verdict]) -> _Guests:
    guests = [v.guest for v in vs]
    (
        target,
        actual,
        max_bytes,
        autodeflate,
        os_type,
        used_bytes,
        total,
        available,
        swap_out,
        swap_in,
        faults,
        last,
        free,
        disk_read,
    ) = transpose(guests, _GUEST, 14)
    floor, ceiling, status, self_deflated, shrink_hold, stats_time = transpose(vs, _VERDICT, 6)
    actual_values, has_actual = known_ints(actual)
    target_values = _column(target, np.int64)
    deflates = _column(autodeflate, np.bool_)
    total_values, has_total = known_ints(total)
    swap_in_values, has_swap_in = known_ints(swap_in)
    fault_values, has_faults = known_ints(faults)
    disk_read_values, has_disk_read = known_ints(disk_read)
    return _Guests(
        target=target_values,
        actual=np.where(has_actual, actual_values, target_values),
        has_actual=has_actual,
        max_bytes=_column(max_bytes, np.int64),
        floor=_column(floor, np.int64),
        ceiling=_column(ceiling, np.int64),
        autodeflate=deflates,
        follows_balloon=deflates | _column((os == "windows" for os in os_type), np.bool_),
        blind=_column((x != Status.MANAGED for x in status), np.bool_),
        self_deflated=_column(self_deflated, np.bool_),
        shrink_hold=_column((x is not None for x in shrink_hold), np.bool_),
        total=total_values,
        has_total=has_total,
        used_bytes=known_ints(used_bytes)[0],
        available=known_ints(available)[0],
        swap_out=known_ints(swap_out)[0],
        swap_in=swap_in_values,
        has_swap_in=has_swap_in,
        major_faults=fault_values,
        has_major_faults=has_faults,
        last_update=known_floats(last)[0],
        stats_changed=_differs(last, stats_time),
        free=known_ints(free)[0],
        disk_read=disk_read_values,
        has_disk_read=has_disk_read,
    )


_RECORD = attrgetter(
    "seen_time", "seen_actual", "seen_wall", "demand", "used", "used_doubt", "reserved", "stats_time",
    "swap_in", "major_faults", "rise_rate", "trend", "rate", "jump", "pressure_at", "stats_actual",
    "last_grow", "shrink_wall",
)  # fmt: skip


def _records(vs: Sequence[Verdict]) -> _Records:
    recs = [v.record for v in vs]
    columns = transpose(recs, _RECORD, 18)
    (seen_time, seen_actual, seen_wall, demand, used, used_doubt, reserved, stats_time, swap_in, faults,
     rise_rate, trend, rate, jump, pressure_at, stats_actual, last_grow, shrink_wall) = columns  # fmt: skip
    seen_time_values, has_seen_time = known_floats(seen_time)
    seen_actual_values, has_seen_actual = known_ints(seen_actual)
    seen_wall_values, has_seen_wall = known_floats(seen_wall)
    demand_values, has_demand = known_ints(demand)
    used_values, has_used = known_ints(used)
    swap_in_values, has_swap_in = known_ints(swap_in)
    fault_values, has_faults = known_ints(faults)
    pressure_at_values, has_pressure_at = known_floats(pressure_at)
    stats_actual_values, has_stats_actual = known_ints(stats_actual)
    last_grow_values, has_last_grow = known_floats(last_grow)
    shrink_wall_values, has_shrink_wall = known_floats(shrink_wall)
    return _Records(
        seen_time=seen_time_values,
        has_seen_time=has_seen_time,
        seen_actual=seen_actual_values,
        has_seen_actual=has_seen_actual,
        seen_wall=seen_wall_values,
        has_seen_wall=has_seen_wall,
        demand=demand_values,
        has_demand=has_demand,
        used=used_values,
        has_used=has_used,
        used_doubt=_column(used_doubt, np.int64),
        reserved=_column(reserved, np.int64),
        stats_time=known_floats(stats_time)[0],
        swap_in=swap_in_values,
        has_swap_in=has_swap_in,
        major_faults=fault_values,
        has_major_faults=has_faults,
        rise_rate=_column(rise_rate, np.float64),
        trend=_column(trend, np.float64),
        rate=_column(rate, np.float64),
        jump=_column(jump, np.int64),
        pressure_at=pressure_at_values,
        has_pressure_at=has_pressure_at,
        stats_actual=stats_actual_values,
        has_stats_actual=has_stats_actual,
        last_grow=last_grow_values,
        has_last_grow=has_last_grow,
        shrink_wall=shrink_wall_values,
        has_shrink_wall=has_shrink_wall,
    )


def kernel_reserved(g: _Guests, rec: _Records, resting: Bools) -> I64:
    """Memory the guest's kernel keeps out of MemTotal (its code, the page structures of all its RAM):
    a target must cover it as well as ``used``, or the guest has less available than the policy thinks
    (about 30 MiB of a 512 MiB Linux guest). MemTotal is the balloon's size less this when the balloon
    shrinks MemTotal, and the boot size less this when it does not (autodeflate, a balloon at max);
    otherwise, only a balloon at rest since the stats were taken tells it, so it is remembered."""
    total, actual = g.total, g.actual
    unknown = ~g.has_total | ~g.has_actual | (total > g.max_bytes)
    at_boot_size = g.autodeflate | (actual >= g.max_bytes)
    measured = resting & (total <= actual)
    return np.select(
        [unknown, at_boot_size, measured], [rec.reserved, g.max_bytes - total, actual - total], rec.reserved
    )


def shrink_allowance(
    g: _Guests, rec: _Records, stats_time: F64, doubt: I64, now: float, t: Tunables
) -> tuple[Bools, I64]:
    """Whether each managed VM may shrink this tick, and by at most how much (see
    :func:`.allocate.step_targets`): not within the cooldown after a grow, not twice on the same stats
    report, nor on one taken before the balloon got there (``doubt``: the next step is judged on what
    the last one did), not while the guard holds it, never without fresh stats; by its share of the
    shrink rate over the time since the last look, or the least step. ``stats_time`` is that of the
    stats on hand, or 0.0."""
    cooling = rec.has_last_grow & (now - rec.last_grow < t.shrink_cooldown_after_grow_s)
    unseen = (rec.has_shrink_wall & (stats_time <= rec.shrink_wall)) | (doubt > 0)
    dt = np.where(rec.has_seen_time & (now > rec.seen_time), now - rec.seen_time, t.interval_s)
    may_shrink = ~(cooling | unseen | g.shrink_hold | g.blind)
    step = (g.ceiling * t.shrink_rate_per_s * dt).astype(np.int64)
    return may_shrink, np.maximum(t.shrink_min_step_bytes, step)


class _Used(NamedTuple):
    """What each guest uses, as far as its stats and the balloon's moves tell it."""

    used: I64  # what it uses, the kernel's reserved memory included
    doubt: I64  # how much more it may use (see :func:`_used`)
    reserved: I64
    stats_actual: I64  # the balloon size its stats were taken against


def _used(g: _Guests, rec: _Records, t: Tunables) -> _Used:
    """What each guest uses, and how sure that is."""
    actual = g.actual
    still = rec.has_seen_actual & (np.abs(actual - rec.seen_actual) <= t.stuck_tolerance_bytes)
    stats_wall = g.last_update
    # The balloon has not moved since the last look, and these stats were taken after it: they agree.
    resting = still & rec.has_seen_wall & (stats_wall >= rec.seen_wall)
    reserved = kernel_reserved(g, rec, resting)
    used = g.used_bytes + reserved
    # With autodeflate (and on Windows, whose MemTotal stays at max too) ``used`` subtracts the balloon,
    # which libvirt reports as it is now while the stats are up to a period old: a balloon that moved in
    # between would show as a change in ``used``. Stats are read against the balloon as it was when they
    # were taken: the last look's when they are older than it, and that same balloon for as long as they
    # are the stats on hand. (Read against the last look only, a Windows guest reporting every 10 s had
    # each grow counted as use again on the next tick, and grew itself to its max: 228 reversals an hour
    # in the demo.)
    older = rec.has_seen_actual & rec.has_seen_wall & (stats_wall < rec.seen_wall)
    taken_against = np.where(older, rec.seen_actual, actual)
    stats_actual = np.where(g.stats_changed | ~rec.has_stats_actual, taken_against, rec.stats_actual)
    used = np.where(g.follows_balloon, np.maximum(0, used - (actual - stats_actual)), used)
    # Stats newer than the last look, while a shrink moved the balloon since it, were taken against a
    # balloon somewhere between the two sizes: read against the later one, they may under-read the use
    # by as much as the balloon moved. The reading is kept (a level read high would grow the guest back
    # at once), with that doubt beside it: the next report's rise is measured from the top of it, or
    # each shrink would look like a rise on the next report and grow the guest back (a reversal every
    # cooldown at constant demand). A grow's doubt is the other way, over-reading, and needs none.
    taken_mid_move = g.stats_changed & ~older & rec.has_seen_actual & rec.has_seen_wall
    shrunk = np.where(taken_mid_move & g.follows_balloon, np.maximum(0, rec.seen_actual - actual), 0)
    doubt = np.where(g.stats_changed, shrunk, rec.used_doubt)
    return _Used(used, doubt, reserved, stats_actual)


class _Growth(NamedTuple):
    """What the stats since the last report say of the guests' growth and of swapping."""

    stats_time: F64  # of the stats the rates are measured from, or 0.0
    keeps_stats_time: Bools  # nothing new: the record's stats time is kept
    rise_rate: F64
    trend: F64
    rate: F64
    jump: I64
    boost: I64  # bytes swapped in fast enough to count as pressure (1: major faults did)
    sdt: F64  # seconds of stats time since the last report (0.0: no new one)


def _growth(g: _Guests, rec: _Records, used: I64, dt: F64, t: Tunables) -> _Growth:
    # Rates are per second of *stats* time: a guest polled every 10 s shows 10 s of change at once.
    sdt = np.where((g.last_update != 0) & (rec.stats_time != 0), g.last_update - rec.stats_time, 0.0)
    fresh = sdt > 0
    per_s = np.where(fresh, sdt, 1.0)  # divides only where fresh
    keeps = ~fresh & (rec.stats_time != 0)  # nothing new: keep measuring from the last report
    fades, fading = (rec.rate != 0) & (dt > 0), (rec.jump != 0) & (dt > 0)
    with np.errstate(over="ignore"):  # a tiny half-life: infinitely many, as in Python
        rate = np.where(fades, rec.rate * _halves(dt / t.rate_half_life_s, fades), rec.rate)
        jump = np.where(
            fading, (rec.jump * _halves(dt / t.jump_half_life_s, fading)).astype(np.int64), rec.jump
        )
    # Measured from the most the last report allows (see :func:`_used`): a rise for sure.
    rise = np.where(rec.has_used, used - (rec.used + rec.used_doubt), 0)
    rise_rate = np.where(rise > 0, rise / per_s, 0.0)
    jump = np.where(fresh & (rise >= t.jump_min_bytes), np.maximum(jump, rise), jump)
    # A rate counts once two reports in a row show it: one jump is not a ramp (the jump is
    # remembered above, and the cushion keeps room for another like it). The ramp going on now is
    # projected ahead by the tiers (see :func:`.tiers.tiers`), not into the demand: the demand decays
    # slowly, and a ramp that has stopped needs no more room ahead of it.
    trend = np.minimum(rise_rate, rec.rise_rate)
    rate = np.where(fresh, np.maximum(rate, trend), rate)
    swapped = g.swap_in - rec.swap_in
    swapping = g.has_swap_in & rec.has_swap_in & (swapped > 0)
    swapping &= swapped / per_s > t.swap_in_pressure_bytes_per_s
    faults = g.major_faults - rec.major_faults
    faulting = g.has_major_faults & rec.has_major_faults & (faults / per_s > t.major_fault_pressure_per_s)
    boost = np.where(swapping, swapped, 0)
    boost = np.where(faulting, np.maximum(boost, 1), boost)
    return _Growth(
        stats_time=np.where(keeps, rec.stats_time, g.last_update),
        keeps_stats_time=keeps,
        rise_rate=np.where(fresh, rise_rate, rec.rise_rate),
        trend=np.where(fresh, trend, rec.trend),
        rate=rate,
        jump=jump,
        boost=np.where(fresh, boost, 0),
        sdt=sdt,
    )


def _demand(
    g: _Guests, rec: _Records, used: I64, boost: I64, dt: F64, now: float, t: Tunables
) -> tuple[I64, F64, Bools, Bools]:
    """Each VM's demand, when it last showed pressure (0.0 and not known: never), and whether it is
    under pressure now."""
    signal = (g.available < t.low_available_bytes) | g.self_deflated | (boost != 0)
    raw = used + np.where(boost != 0, boost + (g.ceiling * t.pressure_boost_fraction).astype(np.int64), 0)
    pressure_at = np.where(signal, now, rec.pressure_at)
    pressure_known = signal | rec.has_pressure_at
    pressure = pressure_known & (now - pressure_at < t.pressure_hold_s)
    # Rises at once; falls toward what it uses now by ``demand_decay_s``.
    rises = ~rec.has_demand | (raw >= rec.demand) | (dt <= 0)
    with np.errstate(over="ignore"):  # a tiny decay time: gone at once, as in Python
        decay = _each(math.exp, -dt / t.demand_decay_s, ~rises)
    demand = np.where(rises, raw, raw + ((rec.demand - raw) * decay).astype(np.int64))
    return demand, pressure_at, pressure_known, pressure


def _pick(where: list[bool], a: Sequence[_T], b: Sequence[_T]) -> list[_T]:
    """``a`` where ``where``, else ``b``: :func:`numpy.where` for columns that may hold ``None``."""
    return [x if w else y for w, x, y in zip(where, a, b, strict=True)]


def estimate(vs: Sequence[Verdict], now: float, t: Tunables) -> Estimates:
    """Demand and what the tiers are made of, of every managed VM at once, from their stats and what they
    remembered. A VM that lost its stats (blind) keeps what it knew: what it has is the least it keeps
    (see :func:`.tiers.tiers`), its demand and growth are what it remembered."""
    g, rec = _guests(vs), _records(vs)
    blind, ceiling, actual, target = g.blind, g.ceiling, g.actual, g.target
    reading = _used(g, rec, t)
    used = reading.used
    dt = np.where(rec.has_seen_time, now - rec.seen_time, 0.0)
    growth = _growth(g, rec, used, dt, t)
    demand, pressure_at, pressure_known, pressure = _demand(g, rec, used, growth.boost, dt, now, t)
    # It ran past its memory: what it took back, and more, since it is still short.
    boosted = np.minimum(actual + (ceiling * t.self_deflate_boost_fraction).astype(np.int64), ceiling)
    least_need = np.where(g.self_deflated, boosted, 0)
    least_oom_floor = np.where(g.self_deflated, np.minimum(actual, ceiling), 0)
    # Never less than it has while it is short.
    least_need = np.where(pressure, np.maximum(least_need, np.minimum(target, ceiling)), least_need)
    # Blind: what it has is the least it keeps, and it remembers what it knew.
    held = np.minimum(np.maximum(target, actual), ceiling)
    stats_time = np.where(blind, rec.stats_time, growth.stats_time)
    may_shrink, step = shrink_allowance(g, rec, stats_time, reading.doubt, now, t)
    judged, counted = _judged(vs, g, growth, now, t)
    pressure = pressure & ~blind
    guests = [v.guest for v in vs]
    dead_band = np.maximum(t.shrink_dead_band_bytes, (ceiling * t.shrink_dead_band_fraction).astype(np.int64))
    empty = np.zeros(0, dtype=np.int64)
    columns = Columns(
        target=target, actual=actual, floor=g.floor, ceiling=ceiling,
        demand=np.where(blind, rec.demand, demand), used=np.where(blind, rec.used, used),
        latency=np.array([reaction_time(x, t) for x in guests], dtype=np.float64),
        rise_rate=np.where(blind, 0.0, growth.rise_rate), trend=np.where(blind, 0.0, growth.trend),
        rate=np.where(blind, rec.rate, growth.rate), jump=np.where(blind, rec.jump, growth.jump),
        buffer=np.where(blind, 0.0, [t.buffer if v.policy.buffer is None else v.policy.buffer for v in vs]),
        least_need=np.where(blind, held, least_need), least_oom_floor=np.where(blind, held, least_oom_floor),
        has=np.maximum(target, actual),
        shares=[float(t.default_shares if v.policy.shares is None else v.policy.shares) for v in vs],
        pressure=pressure, blind=blind, urgent=pressure | g.self_deflated, exposed=~g.autodeflate,
        reports=np.array([x.mechanism == "report" for x in guests], dtype=np.bool_),
        swaps=~blind & (g.swap_out > 0), may_shrink=may_shrink, step=step,
        cache_step=refault.cache_step(step, g.free, counted, ceiling, judged.probes, t),
        dead_band=dead_band, keep=judged.probes.keep,
        oom_floor=empty, need=empty, want=empty,
    )  # fmt: skip
    return _remembered(vs, columns, g, rec, growth, reading, pressure_at, pressure_known, judged)


def _judged(
    vs: Sequence[Verdict], g: _Guests, growth: _Growth, now: float, t: Tunables
) -> tuple[refault.Judged, Bools]:
    """The VMs' probes into their page caches judged on this tick's figures (a blind VM's are not: it
    has no stats to judge them by), and which VMs have a refault counter."""
    before = refault.probes([v.record.probe for v in vs])
    counter, known = refault.counter(g.major_faults, g.has_major_faults, g.disk_read, g.has_disk_read)
    fresh = growth.sdt > 0
    faults = refault.Faults(counter, known & ~g.blind, fresh, growth.sdt, g.last_update)
    return refault.judge(before, faults, now, t), known


def _remembered(
    vs: Sequence[Verdict], c: Columns, g: _Guests, rec: _Records, growth: _Growth, reading: _Used,
    pressure_at: F64, pressure_known: Bools, judged: refault.Judged,
) -> Estimates:  # fmt: skip
    """The estimates with what each VM remembers of its stats: a blind one what it knew."""
    records = [v.record for v in vs]
    stats = [v.guest.stats for v in vs]
    blind = g.blind.tolist()
    kept = (g.blind | growth.keeps_stats_time).tolist()
    return Estimates(
        verdicts=list(vs),
        columns=c,
        autodeflate=g.autodeflate,
        reserved=np.where(g.blind, rec.reserved, reading.reserved).tolist(),
        used_doubt=np.where(g.blind, rec.used_doubt, reading.doubt).tolist(),
        stats_time=_pick(kept, [r.stats_time for r in records], [s.last_update for s in stats]),
        swap_in=_pick(blind, [r.swap_in for r in records], [s.swap_in for s in stats]),
        major_faults=_pick(blind, [r.major_faults for r in records], [s.major_faults for s in stats]),
        pressure_at=_pick(
            blind, [r.pressure_at for r in records], optional(pressure_at.tolist(), pressure_known)
        ),
        stats_actual=_pick(blind, [r.stats_actual for r in records], reading.stats_actual.tolist()),
        probes=judged.probes.rows(),
        stepped_back=np.flatnonzero(judged.stepped_back).tolist(),
        accuracy=judged.accuracy,
    )
