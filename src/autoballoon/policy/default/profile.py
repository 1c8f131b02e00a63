"""A guest's recurring demand: the peak it showed in each slot of the day and of the week.

A remembered jump fades within hours, so a burst that comes back every night (a backup, a cron report, a
nightly build) meets a guest shrunk to its idle size. The profile remembers when it came: per guest, the
peak demand seen in each time-of-day slot (``profile_slot_s`` wide: 288 slots at 5 min) in a *daily*
record, and in each slot of the week (7 x 288) in a *weekly* one, with how many times each slot was seen.
Each peak fades with ``profile_half_life_s``, one step each day (or week) its slot is seen again, so a
rhythm that stops is forgotten over a few weeks.

What it predicts (:func:`expected`) is only ever what an earlier day, or week, showed at the same time:
the slot being watched now is kept apart (``open_slot``, ``open_peak``) and enters the records only when
it ends, and nothing is predicted before the profile has watched the guest a whole day (a whole week
for the weekly record). Once the weekly record has seen a slot, it is the one read there: a burst seen
on Mondays only is then expected on Mondays only. Slots are of the wall clock (UTC seconds since the
epoch), not the daemon's own clock, so they mean the same after a restart.

Its size is fixed: 2,304 slots, each a peak (int64 bytes in memory, two bytes in the state file, in
units of ``profile_grain_bytes``) and a count (a byte in memory, half of one on disk, at most
:data:`SEEN_MAX`): 5,760 bytes a guest before compression (:func:`pack`).
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from autoballoon.policy.default.arrays import I64, align_up
from autoballoon.tunables import Tunables

if TYPE_CHECKING:  # the estimate reads the records, which hold profiles: only the type, not the module
    from autoballoon.policy.default.estimate import Estimates

U8 = npt.NDArray[np.uint8]

DAY_S = 86_400.0
DAYS_A_WEEK = 7
#: A slot's count saturates here (four bits on disk): past a few sightings, more adds no confidence.
SEEN_MAX = 15
#: The largest peak kept, in grains (two bytes on disk); a larger one is kept as this.
GRAINS_MAX = 0xFFFF
#: What a packed profile starts with: the layout it was written in (an unknown one is not read).
PACK_VERSION = "p1:"


def slots_per_day(t: Tunables) -> int:
    """Slots in a day: the slot width as the nearest whole divisor of a day allows."""
    return max(1, round(DAY_S / t.profile_slot_s))


def slot_width(t: Tunables) -> float:
    return DAY_S / slots_per_day(t)


_A = TypeVar("_A", I64, U8)


def _frozen(a: _A) -> _A:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True)
class Profile:
    """One guest's demand profile (see the module's doc). The arrays are read-only, never changed in
    place: a new slot makes new arrays, so a profile can be shared between states."""

    daily_peak: I64  # (slots a day,) bytes
    daily_seen: U8
    weekly_peak: I64  # (7 x slots a day,) bytes
    weekly_seen: U8
    since: float  # wall time it started watching
    open_slot: int = -1  # the absolute slot being watched now (wall // width), -1: none
    open_peak: int = 0  # the peak seen in it so far


def empty(wall: float, t: Tunables) -> Profile:
    n = slots_per_day(t)
    return Profile(
        daily_peak=_frozen(np.zeros(n, dtype=np.int64)),
        daily_seen=_frozen(np.zeros(n, dtype=np.uint8)),
        weekly_peak=_frozen(np.zeros(n * DAYS_A_WEEK, dtype=np.int64)),
        weekly_seen=_frozen(np.zeros(n * DAYS_A_WEEK, dtype=np.uint8)),
        since=wall,
    )


def fits(p: Profile, t: Tunables) -> bool:
    """Whether the profile was made with these tunables' slots (a changed slot width starts afresh)."""
    return len(p.daily_peak) == slots_per_day(t)


def _grained(n: int, t: Tunables) -> int:
    grain = t.profile_grain_bytes
    return min(align_up(max(0, n), grain), GRAINS_MAX * grain)


def _folded(peak: I64, seen: U8, i: int, observed: int, keep: float) -> tuple[I64, U8]:
    out, count = peak.copy(), seen.copy()
    out[i] = max(observed, int(int(peak[i]) * keep)) if seen[i] else observed
    count[i] = min(int(seen[i]) + 1, SEEN_MAX)
    return _frozen(out), _frozen(count)


def _fold(p: Profile, t: Tunables) -> Profile:
    """The open slot into the records: its peak, or what the record held there faded a step."""
    if p.open_slot < 0:
        return p
    n = slots_per_day(t)
    observed = _grained(p.open_peak, t)
    day = 0.5 ** (DAY_S / t.profile_half_life_s)
    week = 0.5 ** (DAY_S * DAYS_A_WEEK / t.profile_half_life_s)
    daily = _folded(p.daily_peak, p.daily_seen, p.open_slot % n, observed, day)
    weekly = _folded(p.weekly_peak, p.weekly_seen, p.open_slot % (n * DAYS_A_WEEK), observed, week)
    return Profile(*daily, *weekly, since=p.since)


def observe(p: Profile | None, wall: float, demand: int, t: Tunables) -> Profile:
    """The profile after seeing ``demand`` at ``wall``: the open slot's peak raised, or, in a new slot,
    the last one folded into the records and the new one opened."""
    profile = empty(wall, t) if p is None or not fits(p, t) else p
    slot = int(wall // slot_width(t))
    if slot == profile.open_slot:
        if demand <= profile.open_peak:
            return profile
        return Profile(
            profile.daily_peak, profile.daily_seen, profile.weekly_peak, profile.weekly_seen,
            profile.since, slot, demand,
        )  # fmt: skip
    folded = _fold(profile, t)
    return Profile(
        folded.daily_peak, folded.daily_seen, folded.weekly_peak, folded.weekly_seen,
        folded.since, slot, max(0, demand),
    )  # fmt: skip


def expected(p: Profile | None, wall: float, horizon: float, t: Tunables) -> tuple[int, int]:
    """The highest peak an earlier day (or week) showed in the slots from ``wall`` to ``wall + horizon``,
    and the slot of the day it is in (0 and -1: nothing expected)."""
    if p is None or not fits(p, t):
        return 0, -1
    watched = wall - p.since
    if watched < DAY_S:
        return 0, -1
    width, n = slot_width(t), slots_per_day(t)
    weekly = watched >= DAY_S * DAYS_A_WEEK
    best, best_slot = 0, -1
    for slot in range(int(wall // width), int((wall + horizon) // width) + 1):
        w = slot % (n * DAYS_A_WEEK)
        if weekly and p.weekly_seen[w]:
            peak = int(p.weekly_peak[w])
        elif p.daily_seen[slot % n]:
            peak = int(p.daily_peak[slot % n])
        else:
            continue
        if peak > best:
            best, best_slot = peak, slot % n
    return best, best_slot


def faded(p: Profile, seconds: float, t: Tunables) -> Profile:
    """The profile after ``seconds`` unseen (a daemon down): every peak faded as a whole, in grains."""
    if seconds <= 0:
        return p
    keep = 0.5 ** (seconds / t.profile_half_life_s)
    grain = t.profile_grain_bytes

    def fade(a: I64) -> I64:
        return _frozen(np.ceil(a * keep / grain).astype(np.int64) * grain)

    return Profile(fade(p.daily_peak), p.daily_seen, fade(p.weekly_peak), p.weekly_seen, p.since)


# -- on disk ---------------------------------------------------------------------------------------------


def pack(p: Profile, t: Tunables) -> str:
    """The records as text for the state file: the peaks in grains (two bytes each, little-endian), the
    counts two to a byte, compressed, in base64 behind :data:`PACK_VERSION`. The open slot is folded
    first: what the guest showed in it so far is kept."""
    q = _fold(p, t)
    grains = np.concatenate([q.daily_peak, q.weekly_peak]) // t.profile_grain_bytes
    peaks = np.minimum(grains, GRAINS_MAX).astype("<u2").tobytes()
    seen = np.minimum(np.concatenate([q.daily_seen, q.weekly_seen]), SEEN_MAX).astype(np.uint8)
    nibbles = (seen[0::2] << 4) | seen[1::2]  # 2,304 slots: an even count
    raw = peaks + nibbles.astype(np.uint8).tobytes()
    return PACK_VERSION + base64.b64encode(zlib.compress(raw)).decode("ascii")


def unpack(text: str, since: float, t: Tunables) -> Profile | None:
    """A packed profile back, or None when it is not one (another layout, corrupt, other slots)."""
    if not text.startswith(PACK_VERSION):
        return None
    n = slots_per_day(t) * (DAYS_A_WEEK + 1)
    try:
        raw = zlib.decompress(base64.b64decode(text[len(PACK_VERSION) :], validate=True))
    except (binascii.Error, zlib.error, ValueError):
        return None
    if n % 2 or len(raw) != 2 * n + n // 2 or not math.isfinite(since):
        return None
    peaks = np.frombuffer(raw[: 2 * n], dtype="<u2").astype(np.int64) * t.profile_grain_bytes
    nibbles = np.frombuffer(raw[2 * n :], dtype=np.uint8)
    seen = np.empty(n, dtype=np.uint8)
    seen[0::2], seen[1::2] = nibbles >> 4, nibbles & 0x0F
    d = slots_per_day(t)
    return Profile(
        daily_peak=_frozen(peaks[:d].copy()),
        daily_seen=_frozen(seen[:d].copy()),
        weekly_peak=_frozen(peaks[d:].copy()),
        weekly_seen=_frozen(seen[d:].copy()),
        since=since,
    )


# -- pre-growth ------------------------------------------------------------------------------------------


def anticipated_want(peak: int, ceiling: int, t: Tunables) -> int:
    """The want a guest is grown to before a burst of ``peak`` it expects: the need it will have at that
    demand (the headroom above it) and the OOM margin, so that the burst lands in room it already has."""
    scaled = int(ceiling * t.oom_margin_fraction)
    want = peak + t.min_headroom_bytes + t.oom_margin_bytes + 2 * scaled
    return min(align_up(want, t.target_align_bytes), ceiling)


def anticipate(est: Estimates, wall: float, t: Tunables) -> Estimates:
    """The estimates with each managed VM's anticipated want (its column 0 where its profile expects no
    burst within its reaction time and ``profile_lead_s``). Switched off (``anticipation``), the column
    stays empty and the wants are the tiers' alone."""
    c = est.columns
    if not t.anticipation or not est.verdicts:
        return est
    ceilings, latencies = c.ceiling.tolist(), c.latency.tolist()
    wants = []
    for v, ceiling, latency in zip(est.verdicts, ceilings, latencies, strict=True):
        peak, _ = expected(v.record.profile, wall, latency + t.profile_lead_s, t)
        wants.append(anticipated_want(peak, ceiling, t) if peak else 0)
    anticipated = np.where(c.blind, 0, np.array(wants, dtype=np.int64))
    return est._replace(columns=c._replace(anticipated=anticipated))
