"""Phase 1, classify: which VMs may be moved at all, and within what limits.

Excluded, quarantined by the health guard, held after a manual change, stuck, without fresh stats, or
managed: the rules are the small pure functions of :mod:`autoballoon.safety`, and the health guard's
verdicts come in through ``inputs``. A VM that is not managed may still move (a quarantine's ceiling, a
balloon it follows up, a grow sent again): where, is decided here, once (:func:`held_move`).
"""

from __future__ import annotations

from typing import NamedTuple

from autoballoon import safety
from autoballoon.health import shrink_hold
from autoballoon.model import GuestPolicy, GuestSnapshot, HostSnapshot, Status
from autoballoon.policy.default.arrays import align_up
from autoballoon.policy.default.state import FIRST_LOOK, GuestRecord, PolicyState
from autoballoon.policy.inputs import Inputs, effective_policy
from autoballoon.safety import Progress
from autoballoon.tunables import Tunables
from autoballoon.units import human


class Verdict(NamedTuple):
    """One VM after classification: may it be moved, within what limits, and what it remembered."""

    guest: GuestSnapshot
    policy: GuestPolicy
    record: GuestRecord
    status: Status
    reason: str
    floor: int
    ceiling: int
    progress: Progress | None
    manual_until: float | None
    stuck_until: float | None
    stuck_count: int  # see :func:`autoballoon.safety.stuck_wait`
    self_deflated: bool  # its balloon rose above an unchanged target by itself (autodeflate)
    shrink_hold: str | None  # why a managed VM may not shrink now (health guard), or None
    #: Where a VM that is not managed goes this tick, and why (see :func:`held_move`); decided once, here.
    held_move: tuple[int, str] | None = None


def classify(
    snapshot: HostSnapshot, inputs: Inputs, state: PolicyState, t: Tunables
) -> tuple[list[Verdict], list[Verdict]]:
    """Every VM's verdict: (allocated, others). The allocated VMs are the managed ones and those that
    lost their stats (never shrunk, given memory back); the others are held or excluded."""
    now = snapshot.time
    health = inputs.health
    guard = inputs.health_tunables
    managed: list[Verdict] = []
    held: list[Verdict] = []
    excluded: list[Verdict] = []
    for g in snapshot.guests:
        policy = effective_policy(g, inputs)
        record = state.guests.get(g.name, FIRST_LOOK)
        floor, ceiling = safety.limits(g, policy, t)
        target, actual = g.target_bytes, g.actual_bytes
        excluded_why = safety.exclusion(g, policy)
        if excluded_why is not None:
            excluded.append(
                Verdict(guest=g, policy=policy, record=record, status=Status.EXCLUDED, reason=excluded_why,
                        floor=floor, ceiling=ceiling, progress=None, manual_until=None, stuck_until=None,
                        stuck_count=record.stuck_count, self_deflated=False, shrink_hold=None)
            )  # fmt: skip
            continue
        progress = safety.track_progress(record.progress, actual, target, now, t)
        manual_until = record.manual_until
        if safety.manual_change(target, record.seen_target, record.planned_target):
            manual_until = now + t.manual_grace_s
        if manual_until is not None and manual_until <= now:
            manual_until = None
        stuck_until, stuck_count = _stuck_marks(record, actual, now, t)
        self_deflated = safety.self_deflated(
            actual, record.seen_actual, target, t,
            seen_target=record.seen_target, autodeflate=g.balloon.autodeflate,
        )  # fmt: skip

        stale = safety.hold_reason(g, snapshot.wall_time, t)
        blind = False
        if g.name in health.quarantined:
            status, reason = Status.QUARANTINED, health.quarantined[g.name].reason
        elif manual_until is not None:
            status = Status.MANUAL_HOLD
            reason = f"target set outside autoballoon; held for {manual_until - now:.0f} s"
        elif stuck_until is not None or (safety.is_stuck(progress, now, t) and _inflating(progress)):
            status = Status.STUCK
            stuck_until, stuck_count, reason = _stuck(g, stuck_until, stuck_count, now, t)
        elif (
            stale is not None and record.demand is not None and actual is not None and not safety.hands_off(g)
        ):
            # It had stats and lost them: blind to its demand, it gets its memory back as far as the
            # budget allows, since its workload may grow unseen (an OOM kill is the worst harm).
            status, reason = Status.NO_STATS, stale + "; never shrunk, given memory back while blind"
            blind = True
        elif stale is not None:
            status, reason = Status.NO_STATS, stale + "; held, never shrunk"
        else:
            status, reason = Status.MANAGED, ""
        verdict = Verdict(
            guest=g, policy=policy, record=record, status=status, reason=reason, floor=floor, ceiling=ceiling,
            progress=progress, manual_until=manual_until, stuck_until=stuck_until, stuck_count=stuck_count,
            self_deflated=self_deflated, shrink_hold=shrink_hold(health, g, guard),
        )  # fmt: skip
        if status == Status.MANAGED or blind:
            managed.append(verdict)
        else:
            held.append(verdict._replace(held_move=held_move(verdict, now, t)))
    return managed, held + excluded


def _stuck_marks(
    record: GuestRecord, actual: int | None, now: float, t: Tunables
) -> tuple[float | None, int]:
    """Until when a stuck balloon is still left alone (None: not, or no longer), and how many times in a
    row it was found stuck: a balloon that moves again starts its back-off afresh."""
    until = record.stuck_until if record.stuck_until is not None and record.stuck_until > now else None
    count = record.stuck_count
    if count and safety.followed(actual, record.seen_actual, t):
        count = 0
    return until, count


def _stuck(
    g: GuestSnapshot, until: float | None, count: int, now: float, t: Tunables
) -> tuple[float, int, str]:
    """A stuck VM's marks and reason: just found, its target is taken where the balloon is (see
    :func:`held_move`) and it is left alone for a wait that doubles each time in a row."""
    if until is not None:
        return until, count, f"balloon did not follow its target; left alone for {until - now:.0f} s more"
    count += 1
    wait = safety.stuck_wait(count, t)
    again = f" (stuck {count} times in a row)" if count > 1 else ""
    reason = (
        f"balloon at {human(g.actual_bytes)} did not move toward target {human(g.target_bytes)} for "
        f"{t.stuck_after_s:g} s; left alone for {wait:g} s{again}"
    )
    return now + wait, count, reason


def _inflating(progress: Progress | None) -> bool:
    """A balloon is only "stuck" when it does not inflate: one that does not deflate toward a grow is
    sent the grow again instead (see :func:`retries`), since the guest needs that memory."""
    return progress is not None and progress.inflating


def retries(v: Verdict, now: float, t: Tunables) -> bool:
    """A grow whose balloon has not deflated toward it for ``grow_retry_s``: send it again."""
    p = v.progress
    if p is None or p.inflating or now - p.since < t.grow_retry_s:
        return False
    return v.record.retried_at is None or now - v.record.retried_at >= t.grow_retry_s


def held_move(v: Verdict, now: float, t: Tunables) -> tuple[int, str] | None:
    """Where a VM that is not managed still goes, and why: a quarantined one to its ceiling; one whose
    balloon rose above its target by itself (autodeflate), got stuck above it, or lost its stats while
    it still inflated toward it has its target follow it up; a grow that has not arrived is sent again.
    None of them is ever shrunk, and one its backend holds (:func:`safety.hands_off`) gets nothing."""
    g = v.guest
    if safety.hands_off(g):
        return None
    old = g.target_bytes
    if v.status == Status.QUARANTINED:
        if old < v.ceiling:
            return v.ceiling, "quarantine"
    else:
        follow = ""
        actual = g.actual_bytes
        if v.self_deflated:
            follow = "autodeflate"
        elif v.status == Status.STUCK and v.record.stuck_until is None:
            follow = "stuck"  # just found stuck above its target: take the balloon where it is
        elif v.status == Status.NO_STATS and actual is not None and actual - old >= t.grow_min_step_bytes:
            follow = "no-stats"  # a shrink decided while it had stats is called off where the balloon is
        if follow and actual is not None:
            new = safety.safe_target(
                align_up(actual, t.target_align_bytes), old, v.floor, v.ceiling, may_shrink=False
            )
            if new > old:
                return new, follow
    if retries(v, now, t):
        return old, "retry"
    return None
