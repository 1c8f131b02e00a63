"""Phase 4, emit: each VM's action with its reason and figures, the events an operator must hear about,
and what to remember of it for the next decision."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import Any, NamedTuple

from autoballoon.health import autodeflate_command, reporting_command
from autoballoon.model import Action, Event, GuestDecision, HostSnapshot, Status
from autoballoon.policy.default import profile, refault
from autoballoon.policy.default.allocate import Allocation, Budget
from autoballoon.policy.default.arrays import I64
from autoballoon.policy.default.classify import Verdict, retries
from autoballoon.policy.default.estimate import Estimates
from autoballoon.policy.default.state import GuestRecord
from autoballoon.tunables import Tunables
from autoballoon.units import format_size


def _grow_reason(
    v: Verdict, blind: bool, pressure: bool, old: int, new: int, want: int, keep: int, anticipated: int
) -> str:
    """Why a VM grows: the first that holds of its signals (``keep``: the size a shrink into its page
    cache was stepped back to, see :mod:`.refault`; ``anticipated``: the want a burst its profile
    expects asks for, see :mod:`.profile`)."""
    if blind:
        reason = "no-stats"
    elif v.self_deflated:
        reason = "autodeflate"
    elif pressure:
        reason = "pressure"
    elif old < v.floor:
        reason = "floor"
    elif keep >= new:
        reason = "refault"
    elif anticipated >= new:
        reason = "anticipated"
    else:
        reason = "demand"
    return reason + (" (host-short)" if new < want else "")


def _shrink_reason(v: Verdict, old: int, new: int, want: int, danger: bool) -> str:
    if old > v.ceiling and new == v.ceiling:
        return "max"
    if new >= want:
        return "idle"
    return "host-danger" if danger else "host-short"


def _status_event(v: Verdict) -> Event | None:
    previous = v.record.status
    if v.status == previous or (v.status == Status.MANAGED and previous in ("", Status.EXCLUDED)):
        return None
    message = f"{v.guest.name}: {v.status}" + (f": {v.reason}" if v.reason else "")
    return Event(v.guest.name, "status", message, {"status": str(v.status), "previous": previous or None})


def _owes_autodeflate_warning(v: Verdict) -> bool:
    return not (v.guest.balloon.autodeflate or v.record.warned_autodeflate)


def _owes_reporting_warning(v: Verdict) -> bool:
    g = v.guest
    return not (v.record.warned_reporting or g.mechanism != "balloon" or g.os_type != "linux")


def _autodeflate_warning(v: Verdict) -> Event | None:
    if not _owes_autodeflate_warning(v):
        return None
    name = v.guest.name
    command = autodeflate_command(name)
    message = (
        f"{name}: warning: managed without autodeflate; an allocation larger than its room within one "
        f"reaction time can OOM-kill in the guest (fix at next boot: '{command}')"
    )
    return Event(name, "warning", message, {"autodeflate": False, "remedy": command})


def _reporting_warning(v: Verdict) -> Event | None:
    """Once per guest that would give the host more with free page reporting: a Linux guest (whose
    driver reports free pages since Linux 5.8) with a balloon alone hands back only what the balloon
    takes, and only if the guest had touched it (docs/mechanisms.md measures the difference)."""
    g = v.guest
    if not _owes_reporting_warning(v):
        return None
    command = reporting_command(g.name)
    message = (
        f"{g.name}: warning: its balloon gives the host back only the pages it takes; with free page "
        f"reporting the host would also get the guest's free memory, without a cap on the guest (from its "
        f"next boot: '{command}')"
    )
    return Event(g.name, "warning", message, {"free_page_reporting": False, "remedy": command})


def _stepped_back(name: str, keep: int, accuracy: float) -> Event:
    """A shrink into the guest's page cache made it fault: it keeps the size the probe started from."""
    message = (
        f"{name}: shrinking into its page cache made it re-read pages (accuracy {accuracy:.3f}, below "
        f"the bound): stepped back to {format_size(keep)}, kept there for a while"
    )
    return Event(name, "refault", message, {"keep_bytes": keep, "accuracy": round(accuracy, 4)})


def _anticipated(v: Verdict, est: Estimates, i: int, wall: float, t: Tunables) -> Event:
    """A guest grown ahead of a burst its profile expects: the slot and the figures it came from."""
    c = est.columns
    horizon = float(c.latency[i]) + t.profile_lead_s
    peak, slot = profile.expected(v.record.profile, wall, horizon, t)
    want = int(c.anticipated[i])
    at = slot * profile.slot_width(t)
    clock = f"{int(at // 3600):02d}:{int(at % 3600 // 60):02d} UTC"
    message = (
        f"{v.guest.name}: anticipated: a burst to {format_size(peak)} is expected in the slot at {clock} "
        f"(seen there on earlier days): grown to a want of {format_size(want)} ahead of it"
    )
    fields = {"slot": slot, "slot_start_s": at, "expected_peak_bytes": peak, "anticipated_want_bytes": want,
              "horizon_s": round(horizon, 3)}  # fmt: skip
    return Event(v.guest.name, "anticipated", message, fields)


class Emitted(NamedTuple):
    """One VM's part of the plan: its action (if any), its events, what to remember, what to show."""

    action: Action | None
    events: tuple[Event, ...]
    record: GuestRecord
    decision: GuestDecision
    status: str
    reason: str


def _notices(v: Verdict) -> tuple[tuple[Event, ...], bool, bool]:
    """The status change and the once-per-guest warnings (most ticks have none: the cheap tests first);
    and whether the autodeflate and reporting warnings have now been given."""
    rec = v.record
    event = _status_event(v) if v.status != rec.status else None
    warning = None if rec.warned_autodeflate else _autodeflate_warning(v)
    hint = None if rec.warned_reporting else _reporting_warning(v)
    events = tuple(x for x in (event, warning, hint) if x is not None)
    return events, rec.warned_autodeflate or warning is not None, rec.warned_reporting or hint is not None


class Managed(NamedTuple):
    """The managed VMs' part of the plan, in their order: the actions and events, and per VM what to
    remember, what to show, its status and the reason shown with it."""

    actions: list[Action]
    events: list[Event]
    records: list[GuestRecord]
    decisions: list[GuestDecision]
    status: list[str]
    reasons: list[str]


class Tiers(NamedTuple):
    """What the allocation decided for the managed VMs (see :class:`.allocate.Allocation`)."""

    targets: I64
    wants: I64
    oom_floors: I64
    needs: I64
    goals: I64


def _quiet(v: Verdict) -> bool:
    """Nothing to tell of this VM (the cheap tests of :func:`_notices`, which most ticks pass)."""
    return v.status == v.record.status and not _owes_autodeflate_warning(v) and not _owes_reporting_warning(v)


def emit_managed(
    est: Estimates, tiers: Tiers, danger: bool, budget: int, snapshot: HostSnapshot, t: Tunables
) -> Managed:
    """The managed VMs' actions toward their new targets, with their reasons and the numbers behind them,
    and what each remembers: a loop over the VMs only for what is rare (an action, an event), the rest
    column by column."""
    vs, c = est.verdicts, est.columns
    now, wall = snapshot.time, snapshot.wall_time
    olds, news, wants = c.target.tolist(), tiers.targets.tolist(), tiers.wants.tolist()
    demands, blind, pressure = c.demand.tolist(), c.blind.tolist(), c.pressure.tolist()
    keeps = c.keep.tolist()
    anticipated = c.anticipated.tolist() if c.anticipated.size else [0] * len(vs)
    retried_at = [v.record.retried_at for v in vs]
    warned_autodeflate = [v.record.warned_autodeflate for v in vs]
    warned_reporting = [v.record.warned_reporting for v in vs]
    probes = est.probes
    actions: list[Action] = []
    events: list[Event] = [
        _stepped_back(vs[i].guest.name, probes[i].keep, float(est.accuracy[i])) for i in est.stepped_back
    ]
    for i, (v, old, new, want) in enumerate(zip(vs, olds, news, wants, strict=True)):
        if new > old:
            reason = _grow_reason(v, blind[i], pressure[i], old, new, want, keeps[i], anticipated[i])
            if reason.startswith("anticipated"):
                events.append(_anticipated(v, est, i, wall, t))
            probes[i] = refault.closed(probes[i])  # its load changed: its faults are no longer the balloon's
        elif new < old:
            reason = _shrink_reason(v, old, new, want, danger)
            if reason == "idle":  # a voluntary shrink: judged by what it makes the guest fault
                probes[i] = refault.shrunk(probes[i], old, new, v.guest.stats.last_update, now)
        elif retries(v, now, t):
            reason, retried_at[i] = "retry", now
        else:
            reason = ""
        if reason:
            g = v.guest
            actions.append(Action(g.name, old, new, reason, demands[i], g.stats.available, budget))
        if not _quiet(v):
            told, warned_autodeflate[i], warned_reporting[i] = _notices(v)
            events.extend(told)
    decisions = map(
        GuestDecision, demands, wants, c.floor.tolist(), c.ceiling.tolist(), pressure,
        tiers.oom_floors.tolist(), tiers.needs.tolist(), c.used.tolist(), tiers.goals.tolist(),
    )  # fmt: skip
    reasons = [
        f"shrink held: {v.shrink_hold}"
        if v.shrink_hold is not None and new == old and want < old
        else v.reason
        for v, old, new, want in zip(vs, olds, news, wants, strict=True)
    ]
    return Managed(
        actions=actions,
        events=events,
        records=_remembered(
            est,
            olds,
            news,
            now,
            wall,
            {
                "retried_at": retried_at,
                "warned_autodeflate": warned_autodeflate,
                "warned_reporting": warned_reporting,
                "probe": probes,
                "profile": list(
                    map(profile.observe, (v.record.profile for v in vs), repeat(wall), demands, repeat(t))
                ),
            },
        ),
        decisions=list(decisions),
        status=[v.status for v in vs],
        reasons=reasons,
    )


def _remembered(
    est: Estimates, olds: list[int], news: list[int], now: float, wall: float, changed: dict[str, list[Any]]
) -> list[GuestRecord]:
    """What each managed VM remembers: its figures from the estimate and this plan, and ``changed``, the
    columns the loop over actions and notices wrote (retries, warnings given, probes)."""
    vs, c = est.verdicts, est.columns
    demands = c.demand.tolist()
    pairs = list(zip(vs, olds, news, strict=True))
    return _records(
        {
            "status": [v.status for v in vs],
            "seen_time": repeat(now),
            "seen_target": olds,
            "seen_actual": [v.guest.actual_bytes for v in vs],
            "planned_target": news,
            "demand": demands,
            "used": c.used.tolist(),
            "reserved": est.reserved,
            "used_doubt": est.used_doubt,
            "seen_wall": repeat(wall),
            "stats_time": est.stats_time,
            "swap_in": est.swap_in,
            "major_faults": est.major_faults,
            "rise_rate": c.rise_rate.tolist(),
            "trend": c.trend.tolist(),
            "rate": c.rate.tolist(),
            "jump": c.jump.tolist(),
            "pressure_at": est.pressure_at,
            "last_grow": [now if new > old else v.record.last_grow for v, old, new in pairs],
            "shrink_wall": [wall if new < old else v.record.shrink_wall for v, old, new in pairs],
            "progress": [v.progress for v in vs],
            "stuck_count": [v.stuck_count for v in vs],
            "stats_actual": est.stats_actual,
            **changed,
        }
    )


def _records(columns: dict[str, Iterable[Any]]) -> list[GuestRecord]:
    """The records from their fields' columns (a field without one keeps its default): one call per VM,
    the fields in their order whatever the order of ``columns``."""
    fields = [columns.get(f, repeat(GuestRecord._field_defaults.get(f))) for f in GuestRecord._fields]
    return list(map(GuestRecord, *fields))


def emit_other(v: Verdict, budget: int, snapshot: HostSnapshot) -> Emitted:
    """A VM that is not managed: its held move (decided in :func:`.classify.classify`), if any."""
    g, rec, now = v.guest, v.record, snapshot.time
    event = _status_event(v)
    planned, retried_at, action = g.target_bytes, rec.retried_at, None
    if v.held_move is not None:
        planned, why = v.held_move
        action = Action(g.name, g.target_bytes, planned, why, available=g.stats.available, budget=budget)
        retried_at = now if why == "retry" else retried_at
    record = GuestRecord(
        status=v.status, seen_time=now, seen_target=g.target_bytes, seen_actual=g.actual_bytes,
        seen_wall=snapshot.wall_time, planned_target=planned, demand=rec.demand,
        used=g.used_bytes + rec.reserved if g.used_bytes is not None else None, reserved=rec.reserved,
        stats_time=g.stats.last_update, swap_in=g.stats.swap_in, major_faults=g.stats.major_faults,
        rate=rec.rate, jump=rec.jump, last_grow=now if planned > g.target_bytes else rec.last_grow,
        shrink_wall=rec.shrink_wall, progress=v.progress, stuck_until=v.stuck_until,
        stuck_count=v.stuck_count, manual_until=v.manual_until, retried_at=retried_at,
        warned_autodeflate=rec.warned_autodeflate, warned_reporting=rec.warned_reporting, probe=rec.probe,
        profile=rec.profile,
    )  # fmt: skip
    return Emitted(
        action=action,
        events=(event,) if event is not None else (),
        record=record,
        decision=GuestDecision(rec.demand, None, v.floor, v.ceiling, False),
        status=v.status,
        reason=v.reason,
    )


def reserve_event(a: Allocation, b: Budget, previous: int) -> Event | None:
    """``host-reserve-spent`` once when the targets start taking the host's reserve and once when they
    stop (``previous`` is what the last plan spent): the host below its reserve is the harm chosen over
    an OOM kill in a guest, and the operator must hear of it, but not every tick."""
    spent = a.reserve_spent
    if (spent > 0) == (previous > 0):
        return None
    if spent > 0:
        message = (
            f"host reserve spent: {format_size(spent)} of its {format_size(b.reserve)} (hard minimum "
            f"{format_size(b.min_free)}) to keep {a.at_oom_floor} guests at their OOM floors"
        )
    else:
        message = f"host reserve whole again ({format_size(b.reserve)}; {format_size(previous)} was spent)"
    fields = {
        "spending": spent > 0,
        "spent_bytes": spent if spent > 0 else previous,
        "reserve_bytes": b.reserve,
        "min_free_bytes": b.min_free,
        "at_oom_floor": a.at_oom_floor,
    }
    return Event(None, "host-reserve-spent", message, fields)
