"""The demand profile: a guest's peak demand by slot of the day and of the week, learned from what it
showed, predicting only what an earlier day (or week) showed, and kept in the state file at a fixed,
small size per guest."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType

import numpy as np

from autoballoon import saved
from autoballoon.health import HealthState
from autoballoon.policy import GuestRecord, PolicyState
from autoballoon.policy.default import profile
from autoballoon.state import StateStore
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

T = Tunables()
DAY = profile.DAY_S
SLOT = profile.slot_width(T)
START = 1_700_000_000.0 // DAY * DAY  # a midnight, UTC


def watch(
    p: profile.Profile | None, start: float, end: float, level: int, burst: tuple[float, int]
) -> profile.Profile:
    """The profile after seeing ``level`` every 10 s from ``start`` to ``end``, and ``burst`` = (second
    of the day, size) for one slot each day."""
    at, size = burst
    for wall in np.arange(start, end, 10.0).tolist():
        in_burst = at <= wall % DAY < at + SLOT
        p = profile.observe(p, wall, size if in_burst else level, T)
    assert p is not None
    return p


def test_a_burst_is_expected_only_after_a_day_has_shown_it() -> None:
    burst = (2 * 3600.0, 2560 * MiB)
    p = watch(None, START, START + DAY - 60, 512 * MiB, burst)
    # Within the first day nothing is predicted, even a slot seen earlier the same day.
    assert profile.expected(p, START + DAY - 60, 120.0, T) == (0, -1)
    p = watch(p, START + DAY - 60, START + DAY + 2 * 3600.0 - 120, 512 * MiB, burst)
    peak, slot = profile.expected(p, START + DAY + 2 * 3600.0 - 60, 73.0, T)
    assert peak >= 2560 * MiB and slot == int(2 * 3600 / SLOT)
    # A slot that was quiet on the earlier day predicts its quiet level, not the burst.
    quiet, _ = profile.expected(p, START + DAY + 3600.0, 73.0, T)
    assert quiet == 512 * MiB


def test_the_weekly_record_overrides_the_daily_one_once_a_week_was_seen() -> None:
    """A burst seen on one weekday only is then expected on that weekday only."""
    p: profile.Profile | None = None
    at = 3 * 3600.0
    for day in range(8):
        size = 3 * GiB if day == 0 else 256 * MiB
        p = watch(p, START + day * DAY, START + (day + 1) * DAY, 256 * MiB, (at, size))
    # The daily record still holds the burst, faded a week's worth; the weekly one knows that slot was
    # quiet on this weekday (day 8 is day 1's), and it is the one read.
    n = profile.slots_per_day(T)
    assert p is not None and int(p.daily_peak[int(at // SLOT) % n]) >= 2 * GiB
    assert profile.expected(p, START + 8 * DAY + at - 30, 60.0, T)[0] == 256 * MiB
    # On the burst's weekday it is expected again: what day 0 showed, faded by day 7's quiet step.
    peak, _ = profile.expected(p, START + 14 * DAY + at - 30, 60.0, T)
    assert peak >= 3 * GiB * 0.5 ** (7 * DAY / T.profile_half_life_s) - T.profile_grain_bytes


def test_a_peak_fades_with_its_half_life_and_its_count_saturates() -> None:
    p = profile.empty(START, T)
    for day in range(20):
        wall = START + day * DAY
        p = profile.observe(p, wall, 4 * GiB if day == 0 else 0, T)
        p = profile.observe(p, wall + SLOT, 0, T)  # closes the slot
    i = 0
    expected_peak = 4 * GiB * 0.5 ** (19 * DAY / T.profile_half_life_s)
    assert abs(int(p.daily_peak[i]) - expected_peak) <= 19 * T.profile_grain_bytes
    assert int(p.daily_seen[i]) == profile.SEEN_MAX
    assert int(p.weekly_seen[i % len(p.weekly_seen)]) in (3, 2)


def _full(rng: np.random.Generator, since: float) -> profile.Profile:
    """A profile with every slot seen, at random peaks (the worst case for its compressed size)."""
    n = profile.slots_per_day(T)
    grain = T.profile_grain_bytes
    return profile.Profile(
        daily_peak=rng.integers(0, 4096, n).astype(np.int64) * grain,
        daily_seen=rng.integers(1, profile.SEEN_MAX + 1, n).astype(np.uint8),
        weekly_peak=rng.integers(0, 4096, 7 * n).astype(np.int64) * grain,
        weekly_seen=rng.integers(1, profile.SEEN_MAX + 1, 7 * n).astype(np.uint8),
        since=since,
    )


def test_the_state_file_of_a_thousand_full_profiles_is_under_8_mib_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    wall, now = START + 30 * DAY, 1000.0
    profiles = {f"vm-{i:04d}": _full(rng, START) for i in range(1000)}
    records = {vm: GuestRecord(seen_time=now, profile=p) for vm, p in profiles.items()}
    state = PolicyState(guests=MappingProxyType(records))
    store = StateStore(tmp_path / "state.json")
    assert store.save(saved.remember("autoballoon", HealthState(), state, now, wall, T), now=wall)
    size = (tmp_path / "state.json").stat().st_size
    started = time.perf_counter()
    loaded = store.load(saved.Saved)
    assert loaded is not None
    back = saved.recall_policy(loaded, "autoballoon", PolicyState(), now=5.0, wall=wall, t=T)
    took = time.perf_counter() - started
    print(f"state file for 1,000 full profiles: {size} bytes ({size / MiB:.2f} MiB); loaded in {took:.3f} s")
    assert size < 8 * MiB
    assert isinstance(back, PolicyState) and len(back.guests) == 1000
    for vm, p in profiles.items():
        q = back.guests[vm].profile
        assert q is not None and q.since == p.since
        assert np.array_equal(q.daily_peak, p.daily_peak) and np.array_equal(q.weekly_peak, p.weekly_peak)
        assert np.array_equal(q.daily_seen, p.daily_seen) and np.array_equal(q.weekly_seen, p.weekly_seen)


def test_a_bad_or_foreign_profile_is_learned_again_and_the_record_kept() -> None:
    p = _full(np.random.default_rng(1), START)
    good = profile.pack(p, T)
    assert profile.unpack(good, START, T) is not None
    assert profile.unpack("p0:" + good[3:], START, T) is None  # another layout
    assert profile.unpack(good[:-8], START, T) is None  # cut short
    assert profile.unpack("p1:not base64!", START, T) is None
    assert profile.unpack(good, START, Tunables(profile_slot_s=600.0)) is None  # other slots
    record = {"at": START, "jump": GiB, "profile": "p1:garbage", "profile_since": START}
    loaded = saved.Saved.model_validate({"policy": "autoballoon", "guests": {"db": record}})
    back = saved.recall_policy(loaded, "autoballoon", PolicyState(), now=5.0, wall=START, t=T)
    assert isinstance(back, PolicyState)
    assert back.guests["db"].profile is None and back.guests["db"].jump == GiB
