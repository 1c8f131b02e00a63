"""What the daemon remembers across restarts, and how it maps onto the policy's and the guard's state.

A restarted daemon must not balloon a quarantined guest back into its CPU storm, fight an operator's
manual target it had honoured, or forget the bursts a guest has shown (its cushion would shrink to the
prior at once). These are saved by the controller through :class:`autoballoon.state.StateStore`:

- the health guard's quarantines, with their reason and end;
- per guest: a manual hold's end, a stuck balloon's retry time, the last growth (the shrink cooldown),
  and the learned history (largest jump, steady growth rate, the memory its kernel keeps, and its demand
  profile: the peak it showed in each slot of the day and of the week, see
  :mod:`autoballoon.policy.default.profile`, packed into a few KiB of text).

Times in the policy and the guard are the controller's monotonic clock, which a restart resets, so they
are saved as wall-clock times and turned back into the new monotonic clock on load. The learned history
keeps fading over the time the daemon was down. Everything else (demand, the stuck detector's marks,
CPU baselines) is rebuilt within a few ticks, and is safer rebuilt than restored from a stale past.
The conversions are pure functions; the schema is a pydantic model, so a file that does not fit is
ignored as a whole (see :mod:`autoballoon.state`), except for a guest's record: one that does not fit
(a value beyond what the policy can compute with, such as a growth rate of 1e308 bytes/s, which made
NumPy overflow and the guest's sizing garbage) is left out and named in :attr:`Saved.dropped`, and the
rest of the file is kept.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autoballoon.constraints import MAX_BYTES_PER_S, MAX_SECONDS, MAX_SETTING_BYTES, Range
from autoballoon.health import HealthState, Quarantine
from autoballoon.policy.default import GuestRecord, PolicyState, profile
from autoballoon.policy.default.refault import Probe
from autoballoon.tunables import Tunables

NAME_MAX = 1024
REASON_MAX = 4096
#: The largest size saved: what a setting may name. The policy adds a few sizes and multiplies them by
#: factors in int64 arrays, which this bound keeps from wrapping (2**62 did).
BYTES_MAX = MAX_SETTING_BYTES
#: The latest wall-clock time saved: the end of year 9999, past which no clock or calendar reads.
WALL_MAX = 253_402_300_799.0
#: The most stuck episodes in a row counted: the back-off reaches its longest wait long before.
STUCK_COUNT_MAX = 64
#: The longest packed profile read: 2,304 slots take at most 5,760 bytes before compression and base64.
PROFILE_MAX = 16_384
_Wall = Annotated[float, Field(ge=0, le=WALL_MAX, allow_inf_nan=False)]
_Bytes = Annotated[int, Field(ge=0, le=BYTES_MAX)]
#: A growth rate the policy multiplies by a reaction time (see :data:`MAX_BYTES_PER_S`).
_Rate = Annotated[float, Range(0, MAX_BYTES_PER_S, unit="bytes/s")]
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
    stuck_count: Annotated[int, Field(ge=0, le=STUCK_COUNT_MAX)] = 0
    last_grow: _Wall | None = None
    jump: _Bytes = 0
    rate: _Rate = 0.0
    reserved: _Bytes = 0
    #: The size a shrink into its cache was stepped back to, and until when it is kept.
    keep: _Bytes = 0
    keep_until: _Wall | None = None
    #: Its demand profile (:func:`.profile.pack`) and since when it has watched the guest. One in a layout
    #: or with slots this daemon does not read is learned again, the rest of the record kept.
    profile: Annotated[str, Field(max_length=PROFILE_MAX)] | None = None
    profile_since: _Wall | None = None

    @model_validator(mode="after")
    def _within_a_year(self) -> SavedGuest:
        """Nothing the policy holds lasts longer than a setting's longest time after the record."""
        for name in ("manual_until", "stuck_until", "last_grow", "keep_until"):
            t = getattr(self, name)
            if t is not None and t > self.at + MAX_SECONDS:
                raise ValueError(f"{name} is more than {MAX_SECONDS:g} s after the record's time")
        return self


class Saved(_Strict):
    """The whole document the daemon saves."""

    policy: str
    quarantines: dict[_Name, SavedQuarantine] = Field(default_factory=dict)
    guests: dict[_Name, SavedGuest] = Field(default_factory=dict)
    #: The guests whose saved record did not fit, with why: left out on load (never saved).
    dropped: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _leave_out_unfit_records(cls, data: Any) -> Any:
        """One guest's record that does not fit costs that record, not the quarantines and the other
        records: each is checked on its own, and those that fail move to ``dropped``."""
        if not isinstance(data, dict) or not isinstance(data.get("guests"), dict):
            return data
        guests: dict[str, Any] = {}
        dropped: dict[str, str] = {}
        for vm, record in data["guests"].items():
            try:
                if not 1 <= len(vm) <= NAME_MAX:
                    raise ValueError(f"a VM name of {len(vm)} characters")
                guests[vm] = SavedGuest.model_validate(record)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                dropped[vm[:NAME_MAX]] = f"{where}: {first['msg']}"
            except ValueError as e:
                dropped[vm[:NAME_MAX]] = str(e)
        return {**data, "guests": guests, "dropped": dropped}


def _to_wall(t: float | None, now: float, wall: float) -> float | None:
    return None if t is None else wall + (t - now)


def _to_clock(t: float | None, now: float, wall: float) -> float | None:
    return None if t is None else now + (t - wall)


def _fit(t: float | None, at: float) -> float | None:
    """A wall time as a record made at ``at`` may hold it (what the load would refuse is cut instead)."""
    return None if t is None else min(max(0.0, t), at + MAX_SECONDS, WALL_MAX)


def remember(
    policy: str, health: HealthState, state: object, now: float, wall: float, t: Tunables | None = None
) -> Saved:
    """What to save now (``now`` is the controller's clock, ``wall`` the wall clock at the same instant).
    ``state`` is the policy's state: only the default policy's records are kept, with their profiles
    when ``t`` is given (packing them is the costly part: the controller asks for them only when it
    saves). What the document cannot hold is left out or cut to fit (a VM name longer than any libvirt
    accepts, a reason beyond its length), so that saving never fails on what the daemon runs on."""
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
            at = min(max(0.0, _to_wall(r.seen_time, now, wall) or wall), WALL_MAX)
            guests[vm] = SavedGuest(
                at=at,
                manual_until=_fit(_to_wall(r.manual_until, now, wall), at),
                stuck_until=_fit(_to_wall(r.stuck_until, now, wall), at),
                stuck_count=min(max(0, r.stuck_count), STUCK_COUNT_MAX),
                last_grow=_fit(_to_wall(r.last_grow, now, wall), at),
                jump=min(max(0, r.jump), BYTES_MAX),
                rate=min(r.rate, MAX_BYTES_PER_S) if 0.0 < r.rate < math.inf else 0.0,
                reserved=min(max(0, r.reserved), BYTES_MAX),
                keep=min(max(0, r.probe.keep), BYTES_MAX),
                keep_until=_fit(_to_wall(r.probe.keep_until, now, wall), at),
                **_packed(r.profile, at, t),
            )
    return Saved(policy=policy, quarantines=quarantines, guests=guests)


def _packed(p: profile.Profile | None, at: float, t: Tunables | None) -> dict[str, Any]:
    if p is None or t is None or not profile.fits(p, t):
        return {}
    return {"profile": profile.pack(p, t), "profile_since": min(max(0.0, p.since), at)}


def _profile(g: SavedGuest, down: float, t: Tunables) -> profile.Profile | None:
    """The saved profile, faded over the time the daemon was down; None when there is none it reads."""
    if g.profile is None or g.profile_since is None:
        return None
    p = profile.unpack(g.profile, g.profile_since, t)
    return None if p is None else profile.faded(p, down, t)


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


def _kept(g: SavedGuest, now: float, wall: float) -> Probe:
    """The size a guest was stepped back to, if it is still to be kept (no probe survives a restart:
    the faults it counted are the guest's, not the daemon's)."""
    until = _to_clock(g.keep_until, now, wall)
    if not g.keep or until is None or until <= now:
        return Probe()
    return Probe(keep=g.keep, keep_until=until)


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
            stuck_count=g.stuck_count,
            last_grow=_to_clock(g.last_grow, now, wall),
            jump=int(g.jump * 0.5 ** (down / t.jump_half_life_s)),
            rate=g.rate * 0.5 ** (down / t.rate_half_life_s),
            reserved=g.reserved,
            probe=_kept(g, now, wall),
            profile=_profile(g, down, t),
        )
    return PolicyState(guests=MappingProxyType(records), time=state.time)
