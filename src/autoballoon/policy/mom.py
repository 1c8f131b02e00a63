"""oVirt MOM's default balloon rules (``doc/balloon.rules``), re-implemented from the published description.

MOM samples host and guest memory every 5 s and runs its policy every 10 s on plain means of the last
10 samples. The host decides the direction for everyone (below 20 % free every guest shrinks, otherwise
every guest grows), and no balloon moves by more than 5 % of its current size per policy tick. This module
is the pure core: :func:`observe` folds one sample into the state, :func:`decide` turns the state into new
targets. The harness adapter calls them at MOM's own intervals.

Two mappings onto what a snapshot carries: MOM's host "free" (MemFree + Buffers + Cached) is read as the
host's MemAvailable, the nearest field a :class:`HostSnapshot` has; a guest's ``balloon_cur`` is the
balloon's ``actual`` size (the target when the balloon never answered) and ``mem_unused`` is the guest's
MemFree. Guests without stats are left alone, as MOM skips entities missing a required field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from autoballoon.model import GuestSnapshot, HostSnapshot


@dataclass(frozen=True, slots=True)
class MomTunables:
    """The published defaults of ``balloon.rules`` and ``mom.conf``."""

    sample_interval_s: float = 5.0
    policy_interval_s: float = 10.0
    #: StatAvg is the mean of this many most recent samples.
    avg_samples: int = 10
    pressure_threshold: float = 0.20
    pressure_critical: float = 0.05
    min_guest_free_percent: float = 0.20
    max_balloon_change_percent: float = 0.05
    min_balloon_change_percent: float = 0.0025


DEFAULT_MOM = MomTunables()


@dataclass(frozen=True, slots=True)
class MomState:
    """The sample windows MOM keeps: host free bytes, and per guest (balloon_cur, mem_unused), oldest
    first, at most ``avg_samples`` each."""

    host_free: tuple[int, ...] = ()
    balloon_cur: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    mem_unused: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: Samples taken so far: MOM decides on every ``policy_interval / sample_interval``-th one.
    samples: int = 0


def _balloon_cur(g: GuestSnapshot) -> int:
    return g.actual_bytes if g.actual_bytes is not None else g.target_bytes


def _eligible(g: GuestSnapshot) -> bool:
    return g.state.active and g.balloon.enabled and not g.policy.exclude


def _push(window: tuple[int, ...], value: int, size: int) -> tuple[int, ...]:
    return (*window, value)[-size:]


def _mean(window: tuple[int, ...]) -> float:
    return sum(window) / len(window)


def observe(state: MomState, snap: HostSnapshot, tun: MomTunables = DEFAULT_MOM) -> MomState:
    """Fold one 5-second sample into the averaging windows. A guest that stopped reporting is dropped,
    so it starts a fresh window when it returns."""
    n = tun.avg_samples
    balloon_cur: dict[str, tuple[int, ...]] = {}
    mem_unused: dict[str, tuple[int, ...]] = {}
    for g in snap.guests:
        if not _eligible(g) or g.stats.free is None:
            continue
        balloon_cur[g.name] = _push(state.balloon_cur.get(g.name, ()), _balloon_cur(g), n)
        mem_unused[g.name] = _push(state.mem_unused.get(g.name, ()), g.stats.free, n)
    return MomState(
        host_free=_push(state.host_free, snap.mem_available, n),
        balloon_cur=balloon_cur,
        mem_unused=mem_unused,
        samples=state.samples + 1,
    )


def decides(state: MomState, tun: MomTunables = DEFAULT_MOM) -> bool:
    """Whether MOM's policy runs after the sample just folded in (every second sample by default)."""
    every = max(1, round(tun.policy_interval_s / tun.sample_interval_s))
    return state.samples % every == 0


def _big_enough(cur: int, new: int, tun: MomTunables) -> bool:
    return abs(new - cur) > tun.min_balloon_change_percent * cur


def host_free_percent(state: MomState, mem_total: int) -> float:
    return _mean(state.host_free) / mem_total if state.host_free and mem_total else 1.0


def shrink_target(
    cur: int, used: float, avg_cur: float, balloon_min: int, host_free: float, tun: MomTunables
) -> int | None:
    """``shrink_guest``: free memory scaled down with host pressure, never more than 5 % at once."""
    if host_free <= tun.pressure_critical:
        guest_free = host_free - tun.pressure_critical  # negative on purpose: force the guest to swap
    else:
        guest_free = tun.min_guest_free_percent * host_free / tun.pressure_threshold
    floor = max(balloon_min, used + guest_free * avg_cur)
    new = int(max(cur * (1.0 - tun.max_balloon_change_percent), floor))
    if new <= cur and _big_enough(cur, new, tun):
        return new
    return None


def grow_target(cur: int, used: float, balloon_max: int, tun: MomTunables) -> int | None:
    """``grow_guest``: toward ``used + 20 % free``, by at most 5 % of the current size, capped at max.

    The description's ``max(cur * 1.05, used + 0.20 * cur)`` is bounded by the rules' overall ±5 % per
    tick, so in effect a guest grows by 5 % a tick until it reaches its maximum.
    """
    if cur >= balloon_max:
        return None
    step_cap = cur * (1.0 + tun.max_balloon_change_percent)
    wanted = max(cur * (1.0 + tun.max_balloon_change_percent), used + tun.min_guest_free_percent * cur)
    new = int(min(wanted, step_cap, balloon_max))
    if _big_enough(cur, new, tun):
        return new
    return None


def decide(state: MomState, snap: HostSnapshot, tun: MomTunables = DEFAULT_MOM) -> dict[str, int]:
    """One policy tick: new balloon targets by VM name (only the guests whose target changes)."""
    hfp = host_free_percent(state, snap.mem_total)
    shrink = hfp < tun.pressure_threshold
    out: dict[str, int] = {}
    for g in snap.guests:
        if g.name not in state.balloon_cur or not _eligible(g):
            continue
        cur = _balloon_cur(g)
        avg_cur = _mean(state.balloon_cur[g.name])
        used = avg_cur - _mean(state.mem_unused[g.name])
        if shrink:
            new = shrink_target(cur, used, avg_cur, g.policy.min_bytes or 0, hfp, tun)
        else:
            new = grow_target(cur, used, g.max_bytes, tun)
        if new is not None and new != g.target_bytes:
            out[g.name] = new
    return out
