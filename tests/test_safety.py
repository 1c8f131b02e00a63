"""The safety rules on their own: limits, exclusion, stale stats, stuck balloons, manual changes."""

from __future__ import annotations

from dataclasses import replace

from autoballoon import safety
from autoballoon.health import HealthState, Quarantine
from autoballoon.model import BalloonConfig, GuestPolicy, Status, VMState
from autoballoon.policy import PolicyState, decide
from autoballoon.safety import Progress
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB
from tests.helpers import inputs, make_guest, make_host

T = Tunables()


def test_limits_floor_is_global_minimum_and_never_above_ceiling() -> None:
    g = make_guest(max_bytes=4 * GiB)
    assert safety.limits(g, GuestPolicy(), T) == (T.global_min_bytes, 4 * GiB)
    assert safety.limits(g, GuestPolicy(min_bytes=1 * GiB, max_bytes=2 * GiB), T) == (1 * GiB, 2 * GiB)
    assert safety.limits(g, GuestPolicy(max_bytes=8 * GiB), T)[1] == 4 * GiB  # never above <memory>
    tiny = make_guest(max_bytes=64 * MiB)
    assert safety.limits(tiny, GuestPolicy(), T) == (64 * MiB, 64 * MiB)


def test_safe_target_clamps_and_holds() -> None:
    assert safety.safe_target(10, 500, 100, 1000, may_shrink=True) == 100
    assert safety.safe_target(5000, 500, 100, 1000, may_shrink=True) == 1000
    assert safety.safe_target(200, 500, 100, 1000, may_shrink=False) == 500


def test_exclusion_reasons() -> None:
    assert safety.exclusion(make_guest(), GuestPolicy(exclude=True)) == "excluded by policy"
    assert "not running" in (safety.exclusion(make_guest(state=VMState.SHUTOFF), GuestPolicy()) or "")
    assert "model='none'" in (safety.exclusion(make_guest(model="none"), GuestPolicy()) or "")
    assert safety.exclusion(make_guest(), GuestPolicy()) is None


def test_hold_reason_missing_and_stale_stats() -> None:
    fresh = make_guest(time=0)
    assert safety.hold_reason(fresh, 1000.0, T) is None
    assert "stale" in (safety.hold_reason(fresh, 1000.0 + T.stats_stale_s + 1, T) or "")
    assert "no guest stats" in (safety.hold_reason(make_guest(used=None), 1000.0, T) or "")
    no_period = replace(make_guest(used=None), balloon=BalloonConfig(stats_period=None))
    assert "disabled" in (safety.hold_reason(no_period, 1000.0, T) or "")
    assert "paused" in (safety.hold_reason(make_guest(state=VMState.PAUSED), 1000.0, T) or "")
    assert "never reported" in (safety.hold_reason(replace(fresh, actual_bytes=None), 1000.0, T) or "")


def test_progress_mark_moves_only_with_the_balloon() -> None:
    p = safety.track_progress(None, 1000 * MiB, 500 * MiB, 0.0, T)
    assert p == Progress(1000 * MiB, True, 0.0)
    # A new, lower target in the same direction does not reset the mark.
    assert safety.track_progress(p, 1000 * MiB, 400 * MiB, 5.0, T) == p
    assert safety.is_stuck(p, T.stuck_after_s, T)
    moved = safety.track_progress(p, 900 * MiB, 400 * MiB, 6.0, T)
    assert moved == Progress(900 * MiB, True, 6.0)
    assert safety.track_progress(moved, 402 * MiB, 400 * MiB, 7.0, T) is None  # arrived
    assert safety.track_progress(p, 100 * MiB, 400 * MiB, 8.0, T) == Progress(100 * MiB, False, 8.0)


def test_manual_change_and_self_deflation() -> None:
    assert safety.manual_change(700, seen_target=500, planned_target=600)
    assert not safety.manual_change(600, seen_target=500, planned_target=600)  # ours
    assert not safety.manual_change(500, seen_target=500, planned_target=600)  # ours, not applied (dry run)
    assert not safety.manual_change(700, seen_target=None, planned_target=None)  # first sight

    def deflated(actual: int, seen_actual: int, target: int, seen_target: int | None = None) -> bool:
        return safety.self_deflated(
            actual * MiB, seen_actual * MiB, target * MiB, T,
            seen_target=None if seen_target is None else seen_target * MiB, autodeflate=True,
        )  # fmt: skip

    assert deflated(400, 200, 200)
    assert not deflated(400, 200, 400)  # deflated toward a grown target
    assert not deflated(400, 400, 200)  # did not rise now
    assert not deflated(300, 400, 200)  # still inflating toward a cut
    # The daemon grew it (200 -> 250 MiB) as it deflated itself past that: still its own doing.
    assert deflated(400, 200, 250, seen_target=200)
    # Grown to 512 MiB at the last look, cut to 128 since: still deflating toward the grow (seen on the
    # rig: read as self-deflation, the guests went between 128 and 512 MiB every second).
    assert not deflated(300, 200, 128, seen_target=512)
    assert deflated(540, 200, 128, seen_target=512)  # past the grow too: its own doing
    # Without autodeflate a balloon never deflates by itself, whatever it reads.
    assert not safety.self_deflated(400 * MiB, 200 * MiB, 200 * MiB, T, seen_target=None, autodeflate=False)


def _tick(state: PolicyState, now: float, **kw: object):  # type: ignore[no-untyped-def]
    g = make_guest(time=now, **kw)  # type: ignore[arg-type]
    return decide(make_host(g, time=now), inputs(), state, T)


def test_stuck_guest_is_reported_reset_and_retried_later() -> None:
    state = PolicyState()
    plan = None
    now = 0.0
    # The balloon sits at 4 GiB whatever target it is given.
    target = 4 * GiB
    while now <= 60:
        plan, state = _tick(state, now, target=target, actual=4 * GiB, used=500 * MiB)
        for a in plan.actions:
            target = a.new_target
        if plan.status["vm"] == Status.STUCK:
            break
        now += 2.0
    assert plan is not None and plan.status["vm"] == Status.STUCK
    assert now <= 2 * T.stuck_after_s + 40  # found within the shrink ramp plus stuck_after_s
    assert [e.kind for e in plan.events] == ["status"] and "stuck" in plan.events[0].message
    (reset,) = plan.actions
    assert reset.reason == "stuck" and reset.new_target == 4 * GiB  # target back where the balloon is
    plan, state = _tick(state, now + 2, target=4 * GiB, actual=4 * GiB, used=500 * MiB)
    assert plan.status["vm"] == Status.STUCK and plan.actions == ()
    plan, state = _tick(state, now + T.stuck_retry_s + 2, target=4 * GiB, actual=4 * GiB, used=500 * MiB)
    assert plan.status["vm"] == Status.MANAGED and plan.actions  # tries again


def _stuck_waits(follow_after: int | None = None, episodes: int = 6) -> list[float]:
    """The waits a balloon that never moves is left alone for, episode after episode (its target is
    whatever the policy last set, its balloon stays at 4 GiB); with ``follow_after``, the balloon does
    follow the shrink after that many episodes, once."""
    state, now, target, waits, actual = PolicyState(), 0.0, 4 * GiB, [], 4 * GiB
    found_at: float | None = None
    while len(waits) < episodes and now < 20 * 3600:
        plan, state = _tick(state, now, target=target, actual=actual, used=500 * MiB)
        for a in plan.actions:
            target = a.new_target
        record = state.guests["vm"]
        if plan.status["vm"] == Status.STUCK and found_at is None:
            assert record.stuck_until is not None
            found_at = now
            waits.append(record.stuck_until - now)
            if follow_after is not None and len(waits) == follow_after:
                actual = 3 * GiB  # it follows the next shrink, once
        elif plan.status["vm"] == Status.MANAGED:
            found_at = None
            if actual != 4 * GiB:
                actual = max(target, 3 * GiB)
        now += 2.0
    return waits


def test_a_balloon_stuck_again_and_again_is_left_alone_longer_each_time() -> None:
    waits = _stuck_waits()
    r = T.stuck_retry_s
    assert waits == [r, 2 * r, 4 * r, 8 * r, T.stuck_retry_max_s, T.stuck_retry_max_s]


def test_a_balloon_that_follows_again_starts_its_wait_afresh() -> None:
    waits = _stuck_waits(follow_after=3, episodes=5)
    r = T.stuck_retry_s
    assert waits[:3] == [r, 2 * r, 4 * r] and waits[3] == r


def test_manual_change_is_honoured_for_the_grace_period() -> None:
    plan, state = _tick(PolicyState(), 0.0, target=2 * GiB, used=500 * MiB)
    planned = plan.actions[0].new_target
    # Someone runs `virsh setmem vm 3G`.
    plan, state = _tick(state, 2.0, target=3 * GiB, used=500 * MiB)
    assert plan.status["vm"] == Status.MANUAL_HOLD and plan.actions == ()
    assert planned != 3 * GiB
    plan, state = _tick(state, 2.0 + T.manual_grace_s - 1, target=3 * GiB, used=500 * MiB)
    assert plan.status["vm"] == Status.MANUAL_HOLD
    plan, state = _tick(state, 2.0 + T.manual_grace_s + 1, target=3 * GiB, used=500 * MiB)
    assert plan.status["vm"] == Status.MANAGED and plan.actions[0].direction == "shrink"


def test_stats_less_guest_held_and_reported() -> None:
    plan, _ = _tick(PolicyState(), 0.0, target=3 * GiB, used=None)
    assert plan.status["vm"] == Status.NO_STATS and plan.actions == ()
    assert "never shrunk" in plan.status_reason["vm"]
    assert [(e.kind, e.fields["status"]) for e in plan.events] == [("status", "no-stats")]


def test_quarantined_guest_is_left_alone_at_its_max() -> None:
    health = HealthState(quarantined={"vm": Quarantine(0.0, None, "CPU storm while ballooned")})
    g = make_guest(max_bytes=4 * GiB, target=4 * GiB, used=100 * MiB)
    plan, _ = decide(make_host(g), inputs(health=health), PolicyState(), T)
    assert plan.status["vm"] == Status.QUARANTINED and plan.actions == ()
    assert plan.status_reason["vm"] == "CPU storm while ballooned"


def test_a_guest_that_loses_its_stats_is_never_shrunk_and_gets_its_memory_back() -> None:
    """Blind to its demand, a guest whose stats went stale may be growing unseen: it is never shrunk,
    and it is given its memory back as far as the budget allows."""
    plan, state = _tick(PolicyState(), 0.0, target=3 * GiB, used=100 * MiB)
    assert plan.status["vm"] == Status.MANAGED
    g = make_guest(target=plan.actions[0].new_target, used=100 * MiB, time=0.0)
    g = replace(g, stats=replace(g.stats, last_update=1000.0))
    plan, state = decide(make_host(g, time=T.stats_stale_s + 5), inputs(), state, T)
    assert plan.status["vm"] == Status.NO_STATS
    assert f"stale ({T.stats_stale_s + 5:.0f} s old)" in plan.status_reason["vm"]
    ((reason, new),) = [(a.reason, a.new_target) for a in plan.actions]
    assert (reason, new) == ("no-stats", 4 * GiB)
    short = make_host(g, time=T.stats_stale_s + 5, available=0)  # no room: held where it is, never shrunk
    plan, _ = decide(short, inputs(), state, replace(T, host_reserve_bytes=0))
    assert plan.status["vm"] == Status.NO_STATS and plan.actions == ()
