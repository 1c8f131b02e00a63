"""The health guard as pure functions: CPU-storm quarantine, host pause, the verdicts a decision reads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoballoon import health, safety
from autoballoon.config import parse_config
from autoballoon.errors import InvalidValueError
from autoballoon.health import HealthState, HealthTunables
from autoballoon.model import GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, VMState
from autoballoon.policy import Inputs, PolicyState, decide
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

H = HealthTunables(
    sustain_s=10.0, window_s=60.0, baseline_min_s=4.0, quarantine_s=600.0, host_pause_hold_s=20.0
)
STEP = 2.0
NS = 1_000_000_000


def guest(
    name: str, cpu_ns: int, target: int = 4 * GiB, *, vcpus: int = 2, os_type: str = "linux"
) -> GuestSnapshot:
    return GuestSnapshot(
        name=name,
        state=VMState.RUNNING,
        max_bytes=4 * GiB,
        target_bytes=target,
        actual_bytes=target,
        stats=GuestStats(total=target, available=target - GiB, last_update=1000.0),
        vcpus=vcpus,
        cpu_time_ns=cpu_ns,
        os_type=os_type,  # type: ignore[arg-type]
    )


def host(
    t: float, *guests: GuestSnapshot, load: float | None = 0.5, throttle: int | None = None
) -> HostSnapshot:
    return HostSnapshot(
        time=t,
        wall_time=1000.0 + t,
        mem_total=32 * GiB,
        mem_available=16 * GiB,
        guests=guests,
        load_avg1=load,
        cpu_count=4,
        thermal_throttle_count=throttle,
    )


class Guest:
    """One simulated guest: CPU accrues at ``load`` of its vCPUs; its target moves when told."""

    def __init__(self, name: str, load: float, vcpus: int = 2) -> None:
        self.name, self.load, self.vcpus = name, load, vcpus
        self.cpu_ns = 0
        self.target = 4 * GiB

    def advance(self, dt: float) -> None:
        self.cpu_ns += int(self.load * self.vcpus * dt * NS)

    def snap(self) -> GuestSnapshot:
        return guest(self.name, self.cpu_ns, self.target, vcpus=self.vcpus)


def run(
    guests: list[Guest], state: HealthState, t0: float, seconds: float, tunables: HealthTunables = H
) -> tuple[HealthState, list[health.HealthEvent], float]:
    t = t0
    events: list[health.HealthEvent] = []
    while t < t0 + seconds:
        t += STEP
        for g in guests:
            g.advance(STEP)
        state, new = health.observe(host(t, *(g.snap() for g in guests)), state, tunables)
        events.extend(new)
    return state, events, t


def test_a_guest_that_storms_after_a_shrink_is_quarantined_within_the_window() -> None:
    g = Guest("win", load=0.05)
    state, events, t = run([g], HealthState(), 0.0, 20.0)
    assert not events and state.vms["win"].baseline == pytest.approx(0.05, abs=0.01)
    g.target = 3 * GiB  # the policy inflates its balloon ...
    changed = t
    state, events, t = run([g], state, t, 4.0)
    g.load = 0.98  # ... and the guest starts to spin every vCPU
    state, events, t = run([g], state, t, 30.0)
    quarantines = [e for e in events if e.kind == "quarantine"]
    assert [e.vm for e in quarantines] == ["win"]
    q = state.quarantined["win"]
    assert q.since - changed <= H.window_s
    assert q.since - changed >= H.sustain_s
    assert quarantines[0].fields["detect_s"] == pytest.approx(q.since - changed)
    assert "autoballoon balloon win --model none" in quarantines[0].message
    assert "autoballoon release win" in q.reason
    assert q.until == pytest.approx(q.since + H.quarantine_s)


def test_a_guest_busy_before_any_change_is_not_quarantined() -> None:
    g = Guest("busy", load=0.97)
    state, _, t = run([g], HealthState(), 0.0, 20.0)
    g.target = 2 * GiB
    state, events, _ = run([g], state, t, 120.0)
    assert not events and not state.quarantined


def test_a_storm_long_after_the_change_is_not_blamed_on_the_balloon() -> None:
    g = Guest("late", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, 20.0)
    g.target = 3 * GiB
    state, _, t = run([g], state, t, H.window_s + 10)
    g.load = 0.99
    state, events, _ = run([g], state, t, 60.0)
    assert not state.quarantined and not events


def test_a_short_burst_is_no_storm() -> None:
    g = Guest("burst", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, 20.0)
    g.target = 3 * GiB
    g.load = 0.99
    state, _, t = run([g], state, t, H.sustain_s - 2 * STEP)
    g.load = 0.1
    state, events, _ = run([g], state, t, 30.0)
    assert not state.quarantined and not events


def test_quarantine_expires_and_release_gives_a_fresh_watch() -> None:
    g = Guest("win", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, 20.0)
    g.target = 3 * GiB
    g.load = 0.98
    state, _, t = run([g], state, t, 20.0)
    assert "win" in state.quarantined
    released = health.release(state, "win", t)
    assert "win" not in released.quarantined and released.vms["win"].changed_at is None
    # Without a release it ends after quarantine_s.
    g.load = 0.05
    state, events, t = run([g], state, t, H.quarantine_s + STEP)
    assert "win" not in state.quarantined
    assert [e.kind for e in events] == ["release"] and "ended" in events[0].message


def test_a_restarted_guest_starts_a_fresh_baseline() -> None:
    g = Guest("vm", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, 20.0)
    g.cpu_ns = 0  # rebooted: the counter starts again
    state, events, _ = run([g], state, t, STEP)
    assert not events and state.vms["vm"].load is None


def test_host_load_pauses_shrinking_after_a_change_and_resumes_when_it_clears() -> None:
    g = Guest("vm", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, 10.0)
    # High load without any balloon change: not ballooning's doing, no pause.
    state, events = health.observe(host(t + 2, g.snap(), load=20.0), state, H)
    assert state.paused is None and not events
    g.target = 3 * GiB
    state, _ = health.observe(host(t + 4, g.snap(), load=1.0), state, H)
    state, events = health.observe(host(t + 6, g.snap(), load=12.0), state, H)
    assert state.paused is not None and "host load 12.0 on 4 CPUs" in state.paused
    assert [e.kind for e in events] == ["pause"]
    assert health.shrink_hold(state, g.snap(), H) == state.paused  # every shrink waits (growth never)
    # Load falls under the cores, but the pause holds for host_pause_hold_s.
    state, events = health.observe(host(t + 8, g.snap(), load=3.0), state, H)
    assert state.paused is not None and not events
    state, events = health.observe(host(t + 8 + H.host_pause_hold_s, g.snap(), load=3.0), state, H)
    assert state.paused is None and [e.kind for e in events] == ["resume"]


def test_thermal_throttling_after_a_change_pauses_shrinking() -> None:
    g = Guest("vm", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, 10.0)
    state, _ = health.observe(host(t + 2, g.snap(), throttle=100), state, H)
    g.target = 3 * GiB
    state, _ = health.observe(host(t + 4, g.snap(), throttle=100), state, H)
    assert state.paused is None
    state, events = health.observe(host(t + 6, g.snap(), throttle=140), state, H)
    assert state.paused is not None and "thermal" in state.paused and events[0].kind == "pause"
    state, _ = health.observe(host(t + 6 + H.host_pause_hold_s, g.snap(), throttle=140), state, H)
    assert state.paused is None


def test_no_shrink_before_a_cpu_baseline() -> None:
    snap = host(0.0, guest("new", 0, target=4 * GiB))
    state, _ = health.observe(snap, HealthState(), H)
    assert "CPU baseline" in (health.shrink_hold(state, snap.guests[0], H) or "")
    blind = replace(guest("new", 0), cpu_time_ns=None)  # no CPU counter: cannot watch, no veto
    assert health.shrink_hold(state, blind, H) is None
    assert health.shrink_hold(state, snap.guests[0], replace(H, enabled=False)) is None
    later = snap
    for k in range(1, 4):
        later = host(k * STEP, guest("new", k * NS // 10, target=4 * GiB))
        state, _ = health.observe(later, state, H)
    assert health.shrink_hold(state, later.guests[0], H) is None  # watched long enough


def test_a_guest_cut_on_the_first_tick_gets_its_baseline_without_waiting_a_window() -> None:
    """A daemon that starts on a host over its budget cuts every guest at once, before any baseline: the
    guest's quiet samples after that cut still count, so it may shrink again seconds later, not a window
    (5 min by default) later; and a storm after the cut is still caught against that baseline."""
    g = Guest("vm", load=0.05)
    state, _, t = run([g], HealthState(), 0.0, STEP)  # the first look
    g.target = 3 * GiB  # cut at once
    state, _, t = run([g], state, t, STEP)
    assert "CPU baseline" in (health.shrink_hold(state, g.snap(), H) or "")
    state, _, t = run([g], state, t, H.baseline_min_s + STEP)
    assert health.shrink_hold(state, g.snap(), H) is None
    assert t < H.window_s
    g.load = 0.98  # and if it starts to spin within the window, it is quarantined
    state, events, t = run([g], state, t, 30.0)
    assert [e.vm for e in events if e.kind == "quarantine"] == ["vm"]


def test_windows_guests_get_a_safe_floor() -> None:
    base = GuestPolicy(min_bytes=512 * MiB)
    assert safety.os_floor(base, "linux", 16 * GiB, min_bytes=2 * GiB, min_fraction=0.25) is base
    win = safety.os_floor(base, "windows", 16 * GiB, min_bytes=2 * GiB, min_fraction=0.25)
    assert win.min_bytes == 4 * GiB
    assert safety.os_floor(base, "windows", GiB, min_bytes=2 * GiB, min_fraction=0.25).min_bytes == GiB
    high = GuestPolicy(min_bytes=6 * GiB)
    assert safety.os_floor(high, "windows", 16 * GiB, min_bytes=2 * GiB, min_fraction=0.25) is high
    snap = host(0.0, guest("w", 0, os_type="windows"), guest("l", 0), guest("cfg", 0))
    inputs = Inputs(health_tunables=H, os_types={"cfg": "windows"})
    plan, _ = decide(snap, inputs, PolicyState(), Tunables())
    assert {n: plan.guests[n].floor for n in ("w", "l", "cfg")} == {
        "w": 2 * GiB,
        "l": Tunables().global_min_bytes,
        "cfg": 2 * GiB,
    }


def test_health_config_section() -> None:
    cfg = parse_config(
        {
            "health": {"sustain_s": 5, "windows_min": "1GiB", "disable_balloon": True},
            "vm": {"win-*": {"os": "windows"}, "win-linux": {"os": "linux"}},
        }
    )
    assert cfg.health.sustain_s == 5.0 and cfg.health.disable_balloon
    assert cfg.health.windows_min_bytes == GiB
    assert cfg.os_for("win-linux") == "linux" and cfg.os_for("win-7") == "windows" and cfg.os_for("x") is None
    for bad, key in (
        ({"cpu_level": 1.5}, "health.cpu_level"),
        ({"sustain": 5}, "health.sustain"),
        ({"windows_min": 2048}, "health.windows_min"),
        ({"host_load_factor": 1.0, "host_load_clear_factor": 2.0}, "health.host_load_clear_factor"),
    ):
        with pytest.raises(InvalidValueError, match=key.replace(".", r"\.")):
            parse_config({"health": bad})
    with pytest.raises(InvalidValueError, match=r"vm\.x\.os"):
        parse_config({"vm": {"x": {"os": "beos"}}})


def test_a_guest_first_seen_ballooned_and_storming_is_quarantined() -> None:
    """The demo's Windows guest boots ballooned and storming: the guard took the storm as its baseline
    and never quarantined it. Its first look now stands for the balloon's last move."""
    g = Guest("win", load=0.98)
    g.target = 3 * GiB  # already ballooned when the daemon first sees it
    state, events, _ = run([g], HealthState(), 0.0, H.sustain_s + 3 * STEP)
    assert [e.kind for e in events] == ["quarantine"]
    q = state.quarantined["win"]
    assert q.probe and "ballooned when first seen" in q.reason


def test_a_guest_first_seen_ballooned_and_quiet_is_not_blamed() -> None:
    g = Guest("win", load=0.05)
    g.target = 3 * GiB
    state, events, _ = run([g], HealthState(), 0.0, H.window_s + 10 * STEP)
    assert events == [] and "win" not in state.quarantined
    assert state.vms["win"].baseline == pytest.approx(0.05, abs=0.01)
    assert health.shrink_hold(state, g.snap(), H) is None


def test_a_probe_that_stays_hot_deflated_is_released_with_its_load_as_baseline() -> None:
    """Deflating is the measurement: a guest that is busy by itself stays at the storm level with its
    balloon at max, is released, and is not blamed for its own load again."""
    g = Guest("build", load=0.98)
    g.target = 3 * GiB
    state, events, t = run([g], HealthState(), 0.0, H.sustain_s + 3 * STEP)
    assert state.quarantined["build"].probe
    g.target = 4 * GiB  # the quarantine deflates it to its max; it stays as busy
    state, events, t = run([g], state, t, H.sustain_s + 3 * STEP)
    assert [e.kind for e in events] == ["release"] and events[0].fields["probe"] is True
    assert "build" not in state.quarantined
    assert state.vms["build"].baseline == pytest.approx(0.98, abs=0.01)
    g.target = 3 * GiB  # ballooned again: the same load is no storm against that baseline
    state, events, _ = run([g], state, t, H.window_s)
    assert events == [] and "build" not in state.quarantined


def test_a_probe_that_calms_down_deflated_stays_quarantined() -> None:
    g = Guest("win", load=0.98)
    g.target = 3 * GiB
    state, _, t = run([g], HealthState(), 0.0, H.sustain_s + 3 * STEP)
    g.target, g.load = 4 * GiB, 0.05  # deflated, and the storm stops: it was the balloon
    state, events, _ = run([g], state, t, 3 * H.sustain_s)
    assert events == []
    assert not state.quarantined["win"].probe  # confirmed: an ordinary quarantine now
