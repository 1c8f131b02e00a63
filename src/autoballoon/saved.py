"""What the daemon remembers across restarts, and how it maps onto the policy's and the guard's state.

A restarted daemon must not balloon a quarantined guest back into its CPU storm, fight an operator's
manual target it had honoured, or forget the bursts a guest has shown (its cushion would shrink to the
prior at once). These are saved by the controller through :class:`autoballoon.state.StateStore`:

- the health guard's quarantines, with their reason and end;
- per guest: a manual hold's end, a stuck balloon's retry time, the last growth (the shrink cooldown),
  and the learned history (largest jump, steady growth rate, the memory its kernel keeps).

Times in the policy and the guard are the controller's monotonic clock, which a restart resets, so they
are saved as wall-clock times and turned back into the new monotonic clock on load. The learned history
keeps fading over the time the daemon was down. Everything else (demand, the stuck detector's marks,
CPU baselines) is rebuilt within a few ticks, and is safer rebuilt than restored from a stale past.
The conversions are pure functions; the schema is a pydantic model, so a file that does not fit is
ignored as a whole (see :mod:`autoballoon.state`).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from autoballoon.health import HealthState, Quarantine
from autoballoon.policy.default import GuestRecord, PolicyState
from autoballoon.tunables import Tunables

NAME_MAX = 1024
REASON_MAX = 4096
BYTES_MAX = 2**62
_Wall = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Bytes = Annotated[int, Field(ge=0, le=BYTES_MAX)]
_Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SavedQuarantine(_Strict):
    since: _Wall
    until: _Wall | None
    reason: Annotated[str, Field(max_length=REASON_MAX)]


class SavedGuest(_Strict):
    """One guest's record, as of ``at`` (wall clock)."""

    at: _Wall
    manual_until: _Wall | None = None
    stuck_until: _Wall | None = None
    last_grow: _Wall | None = None
    jump: _Bytes = 0
    rate: _Rate = 0.0
    reserved: _Bytes = 0


class Saved(_Strict):
    """The whole document the daemon saves."""

    policy: str
    quarantines: dict[_Name, SavedQuarantine] = Field(default_factory=dict)
    guests: dict[_Name, SavedGuest] = Field(default_factory=dict)


def _to_wall(t: float | None, now: float, wall: float) -> float | None:
    return None if t is None else wall + (t - now)


def _to_clock(t: float | None, now: float, wall: float) -> float | None:
    return None if t is None else now + (t - wall)


def remember(policy: str, health: HealthState, state: object, now: float, wall: float) -> Saved:
    """What to save now (``now`` is the controller's clock, ``wall`` the wall clock at the same instant).
    ``state`` is the policy's state: only the default policy's records are kept. What the document
    cannot hold is left out or cut to fit (a VM name longer than any libvirt accepts, a reason beyond
    its length), so that saving never fails on what the daemon runs on."""
    quarantines = {
        vm: SavedQuarantine(
            since=max(0.0, _to_wall(q.since, now, wall) or 0.0),
            until=_to_wall(q.until, now, wall),
            reason=q.reason[:REASON_MAX],
        )
        for vm, q in health.quarantined.items()
        if len(vm) <= NAME_MAX
    }
    guests: dict[str, SavedGuest] = {}
    if isinstance(state, PolicyState):
        for vm, r in state.guests.items():
            if r.seen_time is None or len(vm) > NAME_MAX:
                continue
            at = _to_wall(r.seen_time, now, wall) or wall
            guests[vm] = SavedGuest(
                at=max(0.0, at),
                manual_until=_to_wall(r.manual_until, now, wall),
                stuck_until=_to_wall(r.stuck_until, now, wall),
                last_grow=_to_wall(r.last_grow, now, wall),
                jump=min(max(0, r.jump), BYTES_MAX),
                rate=r.rate if 0.0 < r.rate < math.inf else 0.0,
                reserved=min(max(0, r.reserved), BYTES_MAX),
            )
    return Saved(policy=policy, quarantines=quarantines, guests=guests)


def recall_health(saved: Saved, health: HealthState, now: float, wall: float) -> HealthState:
    """The guard's state with the saved quarantines that have not ended yet."""
    quarantined = dict(health.quarantined)
    for vm, q in saved.quarantines.items():
        if q.until is not None and q.until <= wall:
            continue
        quarantined[vm] = Quarantine(
            since=_to_clock(q.since, now, wall) or now,
            until=_to_clock(q.until, now, wall),
            reason=q.reason,
        )
    return HealthState(
        vms=health.vms,
        quarantined=MappingProxyType(quarantined),
        paused=health.paused,
        pause_until=health.pause_until,
        last_change=health.last_change,
        throttle_count=health.throttle_count,
        time=health.time,
    )


def recall_policy(saved: Saved, policy: str, state: object, now: float, wall: float, t: Tunables) -> object:
    """The policy's state with the saved records (only the default policy's, and only if it saved them).
    The learned history fades over the time since it was saved, as it would have while running."""
    if saved.policy != policy or not isinstance(state, PolicyState):
        return state
    records = dict(state.guests)
    for vm, g in saved.guests.items():
        down = max(0.0, wall - g.at)
        manual_until = _to_clock(g.manual_until, now, wall)
        stuck_until = _to_clock(g.stuck_until, now, wall)
        records[vm] = GuestRecord(
            manual_until=manual_until if manual_until is not None and manual_until > now else None,
            stuck_until=stuck_until if stuck_until is not None and stuck_until > now else None,
            last_grow=_to_clock(g.last_grow, now, wall),
            jump=int(g.jump * 0.5 ** (down / t.jump_half_life_s)),
            rate=g.rate * 0.5 ** (down / t.rate_half_life_s),
            reserved=g.reserved,
        )
    return PolicyState(guests=MappingProxyType(records), time=state.time)
