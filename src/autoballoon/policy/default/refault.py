"""Cache-aware shrinking: how far a guest's page cache may be taken before its applications slow down.

A Linux guest counts its page cache in MemAvailable, so a balloon can shrink it deep into that cache
without an OOM kill or a byte of swap. But a database or a web server then re-reads from disk what it
used to find in memory, and runs slower: the harm just below swapping in the design's order. Two
counters show it (:func:`counter`): the guest's major faults, which its balloon driver reports (a page
of a mapped file read back in), and the pages it reads from its disks, which the host counts (a read()
that missed the cache: no fault at all, and the way PostgreSQL and nginx read their files).

The rule follows ByteDance's TMO (Transparent Memory Offloading), which reclaims only while its
*accuracy*, ``1 - refaults / reclaimed pages``, stays at or above a bound. Each voluntary shrink (toward
the guest's want, not forced by the host's budget) is part of a *probe*, judged on its own:

- It remembers the size it started from, the pages it took and the guest's counter then. A probe
  opens only once the guest's own pace is known (``refault_baseline_s`` of stats without one).
- At every fresh stats report its refaults are counted, less what the guest reads at its own pace (its
  baseline, a moving average taken while no probe is open):
  ``accuracy = 1 - excess refaults / pages taken``.
- Below ``reclaim_accuracy_min``, with at least ``refault_min_faults`` excess refaults (a handful after
  a small step is not a trend), the guest is *stepped back*: it keeps the size the step started from,
  where it was quiet (its want is at least that), for ``refault_memory_s``, and the journal says so.
- With no trouble for ``refault_settle_s`` the step is accepted, and the next may come, twice as large
  (up to the normal shrink step): a cache nobody reads drains in a few steps.

So a shrink goes into the guest's page cache one step at a time, the first small
(``cache_shrink_step_fraction`` of its maximum) and each judged before the next; after a step-back the
next probe starts small again. What is free in the guest beyond what its kernel keeps free goes at the
normal pace, since taking it evicts nothing at once; it is judged all the same (the kernel refills what
is free by evicting cache). A guest with neither counter is shrunk as before, and nothing judges it.
Nothing here holds a guest against the host's budget: keeping an application fast comes after keeping
the host within its memory, so a shrink the budget forces is not made smaller
(:func:`.allocate.step_targets` uses this step only for voluntary shrinks), and a short host still cuts
the kept sizes (they are part of the want, not the need).

The judging is done for all managed VMs at once, one column per figure of their probes
(:class:`Probes`), as the rest of the estimate; opening a probe (:func:`shrunk`) and calling one off
(:func:`closed`) happen per action, in the emit phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from autoballoon.policy.default.arrays import F64, I64, Bools, known_floats, known_ints, optional, transpose
from autoballoon.tunables import Tunables

#: Bytes per page: the unit the guest's fault counters count in.
PAGE_BYTES = 4096


class Probe(NamedTuple):
    """What the policy remembers of a guest's shrinking into its cache (part of its record)."""

    start: int | None = None  # the size the open probe started from (None: no probe open)
    taken: int = 0  # bytes the probe's shrinks took
    faults: int | None = None  # the guest's refault counter when the probe opened
    since: float | None = None  # stats time when the probe opened
    last_step: float | None = None  # snapshot time of the probe's last shrink
    base_rate: float = 0.0  # the guest's own refaults per second while no probe was open
    base_for: float = 0.0  # seconds of stats that rate was taken over
    keep: int = 0  # the size it was stepped back to, held until ``keep_until``
    pace: int = 0  # the next step into its cache (0: the small first step)
    keep_until: float | None = None
    seen: int | None = None  # the guest's refault counter at its last report (see :func:`counter`)


class Probes(NamedTuple):
    """The managed VMs' probes, one column per field of :class:`Probe` (``has_*``: where it is known)."""

    start: I64
    has_start: Bools
    taken: I64
    faults: I64
    has_faults: Bools
    since: F64
    has_since: Bools
    last_step: F64
    has_last_step: Bools
    base_rate: F64
    base_for: F64
    keep: I64
    pace: I64
    keep_until: F64
    has_keep_until: Bools
    seen: I64
    has_seen: Bools

    def rows(self) -> list[Probe]:
        """One :class:`Probe` per VM (for the records the emit phase builds)."""
        start = optional(self.start.tolist(), self.has_start)
        faults = optional(self.faults.tolist(), self.has_faults)
        since = optional(self.since.tolist(), self.has_since)
        last_step = optional(self.last_step.tolist(), self.has_last_step)
        keep_until = optional(self.keep_until.tolist(), self.has_keep_until)
        seen = optional(self.seen.tolist(), self.has_seen)
        return list(
            map(
                Probe, start, self.taken.tolist(), faults, since, last_step, self.base_rate.tolist(),
                self.base_for.tolist(), self.keep.tolist(), self.pace.tolist(), keep_until, seen,
            )
        )  # fmt: skip


_PROBE = attrgetter(*Probe._fields)


def probes(probes: Sequence[Probe]) -> Probes:
    """The probes as columns."""
    columns = transpose(probes, _PROBE, len(Probe._fields))
    start, taken, faults, since, last_step, base_rate, base_for, keep, pace, keep_until, seen = columns
    start_values, has_start = known_ints(start)
    fault_values, has_faults = known_ints(faults)
    since_values, has_since = known_floats(since)
    last_step_values, has_last_step = known_floats(last_step)
    keep_until_values, has_keep_until = known_floats(keep_until)
    seen_values, has_seen = known_ints(seen)
    return Probes(
        start=start_values,
        has_start=has_start,
        taken=np.array(taken, dtype=np.int64),
        faults=fault_values,
        has_faults=has_faults,
        since=since_values,
        has_since=has_since,
        last_step=last_step_values,
        has_last_step=has_last_step,
        base_rate=np.array(base_rate, dtype=np.float64),
        base_for=np.array(base_for, dtype=np.float64),
        keep=np.array(keep, dtype=np.int64),
        pace=np.array(pace, dtype=np.int64),
        keep_until=keep_until_values,
        has_keep_until=has_keep_until,
        seen=seen_values,
        has_seen=has_seen,
    )


class Judged(NamedTuple):
    """The probes after this tick's stats, and what they say."""

    probes: Probes  # ``probes.keep``: the least want each keeps now (0: none)
    stepped_back: Bools  # this report ended a probe whose accuracy fell below the bound
    accuracy: F64  # the open probe's accuracy at this report (NaN: nothing judged)


class Faults(NamedTuple):
    """What this tick says of the guests' refaults (see :func:`counter`)."""

    counter: I64  # the counter now
    known: Bools  # the guest has one
    fresh: Bools  # a new stats report, ``sdt`` seconds of stats time after the last one
    sdt: F64
    stats_time: F64  # the report's time (``last_update``), 0.0 if none


def counter(major_faults: I64, has_faults: Bools, disk_read: I64, has_disk_read: Bools) -> tuple[I64, Bools]:
    """The guests' refault counters: their major faults (from the balloon's stats) plus the pages they
    read from their disks (as the host counts them). A page the balloon took from a hot page cache comes
    back by one or the other: a fault on a mapped file, or a read() that missed the cache, which is no
    fault at all (a database or a web server reads its files so)."""
    pages = np.where(has_disk_read, disk_read // PAGE_BYTES, 0)
    return np.where(has_faults, major_faults, 0) + pages, has_faults | has_disk_read


def _closing(p: Probes, where: Bools) -> Probes:
    """``p`` with the probes ``where`` called off (their other fields kept)."""
    return p._replace(
        has_start=p.has_start & ~where,
        start=np.where(where, 0, p.start),
        taken=np.where(where, 0, p.taken),
        has_faults=p.has_faults & ~where,
        has_since=p.has_since & ~where,
        has_last_step=p.has_last_step & ~where,
    )


def judge(p: Probes, f: Faults, now: float, t: Tunables) -> Judged:
    """Each probe judged on this tick's stats: the guest's own pace learned while none is open, an open
    one stepped back or accepted (see the module's doc), a kept size let go once its time is up."""
    expired = p.has_keep_until & (now >= p.keep_until)
    p = p._replace(keep=np.where(expired, 0, p.keep), has_keep_until=p.has_keep_until & ~expired)
    usable = f.fresh & f.known & (f.sdt > 0)
    per_s = np.where(usable, f.sdt, 1.0)
    # The guest's own pace, while no probe is open: a mean over what was seen, then a moving average
    # over ``refault_baseline_s``.
    learns = usable & ~p.has_start & p.has_seen & (f.counter >= p.seen)
    rate = (f.counter - p.seen) / per_s
    with np.errstate(over="ignore"):  # a tiny time constant: the new rate counts in full, as it should
        w = np.minimum(1.0, per_s / np.minimum(p.base_for + per_s, t.refault_baseline_s))
    p = p._replace(
        base_rate=np.where(learns, p.base_rate + w * (rate - p.base_rate), p.base_rate),
        base_for=np.where(learns, p.base_for + per_s, p.base_for),
        seen=np.where(usable, f.counter, p.seen),
        has_seen=p.has_seen | usable,
    )
    # An open probe whose counter went back (the guest rebooted) is called off; the others are judged.
    open_ = usable & p.has_start
    reset = open_ & (~p.has_faults | ~p.has_since | (f.counter < p.faults) | (f.stats_time == 0))
    judged = open_ & ~reset
    elapsed = np.maximum(0.0, f.stats_time - p.since)
    excess = (f.counter - p.faults) - p.base_rate * elapsed
    pages = p.taken / PAGE_BYTES
    accuracy = np.where(pages > 0, 1.0 - excess / np.where(pages > 0, pages, 1.0), 1.0)
    back = judged & (excess >= t.refault_min_faults) & (accuracy < t.reclaim_accuracy_min)
    keep = np.where(back, np.maximum(p.keep, p.start), p.keep)
    # Accepted: the next step probes on from the smaller size, twice as large (a cache nobody reads
    # drains in a few steps; the step that finds the edge is stepped back all the same).
    accepted = judged & ~back & p.has_last_step & (now - p.last_step >= t.refault_settle_s)
    pace = np.select([back, accepted], [0, 2 * p.taken], p.pace)
    p = _closing(p, reset | back | accepted)._replace(
        keep=keep,
        pace=pace,
        keep_until=np.where(back, now + t.refault_memory_s, p.keep_until),
        has_keep_until=p.has_keep_until | back,
    )
    return Judged(p, back, np.where(judged, accuracy, np.nan))


def cache_step(step: I64, free: I64, faults_known: Bools, ceiling: I64, p: Probes, t: Tunables) -> I64:
    """The most a voluntary shrink may take this tick: what is free in the guest (``free``: MemFree, 0
    if unknown) beyond the slack its kernel keeps at the normal pace ``step``; into its cache, only a
    small step, and only once the last step was judged (no probe open) and the guest's own pace of
    refaults is known. A guest without a refault counter: nothing would tell a step too far, so none is
    made smaller."""
    spare = np.maximum(0, free - t.cache_free_slack_bytes)
    judging = p.has_start | (p.base_for < t.refault_baseline_s)
    small = np.maximum(t.shrink_min_step_bytes, (ceiling * t.cache_shrink_step_fraction).astype(np.int64))
    into_cache = np.where(judging, spare, np.maximum.reduce([spare, small, p.pace]))
    return np.where(faults_known, np.minimum(step, into_cache), step)


def shrunk(probe: Probe, old: int, new: int, stats_time: float | None, now: float) -> Probe:
    """The probe of a voluntary shrink from ``old`` to ``new``, opened from the guest's last report
    (``stats_time``, its counter then); a shrink while one is open (only what is free may go then, see
    :func:`cache_step`) adds to it. Taking what is free evicts nothing at once, but the guest's kernel
    keeps some memory free by evicting its cache, so that is judged too."""
    p = probe
    if p.seen is None or stats_time is None:
        return p
    # Built whole rather than by ``_replace``: one of these per shrinking VM per tick, and the benchmark
    # at 10,000 VMs shows the difference.
    if p.start is not None:
        return Probe(p.start, p.taken + (old - new), p.faults, p.since, now, *p[5:])
    return Probe(old, old - new, p.seen, stats_time, now, *p[5:])


def closed(probe: Probe) -> Probe:
    """The probe called off (the guest grew: its faults from now on are its load's, not the balloon's)."""
    if probe.start is None:
        return probe
    return Probe(None, 0, None, None, None, *probe[5:])
