"""The balloon health guard: stop ballooning a guest that the balloon hurts, and spare a hot host.

Operators have seen guests (Windows with virtio-win's balloon service, virtio-win#614/#1098) spin every
vCPU at ~100 % as soon as their balloon holds memory, driving the host's load far above its cores until
the kernel throttles hot CPUs. The default policy cannot see that: memory looks fine. This guard watches
what the policy does not:

- **CPU storm.** Each guest's CPU use is measured from ``cpu_time_ns`` deltas over its vCPUs. A baseline
  (slow average) is kept from samples taken *before* the balloon was last moved. A guest whose CPU then
  goes to ``cpu_level`` or more of its vCPUs, at least ``baseline_margin`` above that baseline, starting
  within ``window_s`` of a balloon inflation (a lowered target; growth cannot make a guest sick) and
  lasting ``sustain_s``, is **quarantined**: deflated to its
  max and never ballooned again until an operator releases it (``autoballoon release VM``) or
  ``quarantine_s`` passes. A guest that was already busy before the change is never blamed on the balloon.
  Until the guard has ``baseline_min_s`` of CPU samples for a guest, that guest is not shrunk (without a
  baseline a storm could not be told from a busy guest); samples below the storm level count toward that
  first baseline even just after a change, so a daemon that starts by cutting to its budget is not held
  for a whole window. A guest first seen with its balloon already inflated has no sample from before it:
  its first look counts as the inflation and a storm is judged from a baseline of zero, on probation
  (:attr:`Quarantine.probe`): once deflated, a guest still as hot is released as busy by itself.
- **Host pause.** When the host's load average rises above ``host_load_factor`` times its CPU count, or
  its CPUs' thermal-throttle counters climb, within ``window_s`` of a balloon change, every *shrink* is
  suppressed (growth never is) until the load is back under ``host_load_clear_factor`` times the cores
  and nothing throttled for ``host_pause_hold_s``.

The remedy for a storming guest is to remove its balloon device: ``autoballoon balloon VM --model none``
(the device cannot simply be deleted; the change takes effect at the next boot). Every quarantine names it.

Like the policy this is pure: :func:`observe` reads only its arguments (time is ``snapshot.time``) and
everything remembered lives in a frozen :class:`HealthState`. The guard never edits a plan: its state is an
input of the next decision (:class:`autoballoon.policy.Inputs`), which quarantines, pauses and holds
shrinks itself, reading the guard's verdicts through :func:`shrink_hold` and ``HealthState.quarantined``.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

from autoballoon.constraints import (
    Bytes,
    Count,
    Factor,
    Fraction,
    PositiveSeconds,
    Seconds,
    check_fields,
)
from autoballoon.model import Event, GuestSnapshot, HostSnapshot
from autoballoon.units import GiB

_NS = 1e9
_PERCENT = 100.0


@dataclass(frozen=True, slots=True)
class HealthTunables:
    """The knobs of the health guard (config ``[health]``). Shares of CPU are of the guest's vCPUs."""

    #: Turn the whole guard off (no storm detection, no host pause, no Windows floor).
    enabled: bool = True
    #: A guest at this share of its vCPUs or more is spinning (the WMI storm shows ~100 %).
    cpu_level: Fraction = 0.9
    #: ... for at least this long without a break before it is quarantined (a short burst is no storm).
    sustain_s: Seconds = 30.0
    #: The storm must start within this long after the balloon target last moved to be blamed on it.
    window_s: Seconds = 300.0
    #: ... and be at least this share of its vCPUs above the guest's baseline from before the change.
    baseline_margin: Fraction = 0.4
    #: Time constant of the baseline's moving average of CPU use.
    baseline_tau_s: PositiveSeconds = 60.0
    #: CPU seconds of observation needed before a guest may be shrunk at all (its first baseline).
    baseline_min_s: Seconds = 4.0
    #: A quarantine ends by itself after this long (0: only ``autoballoon release`` ends it).
    quarantine_s: Seconds = 86400.0
    #: Shrinking pauses when the host's 1-minute load average exceeds this many times its CPU count ...
    host_load_factor: Factor = 2.0
    #: ... and resumes once it is back at or under this many times its CPU count ...
    host_load_clear_factor: Factor = 1.0
    #: ... and no pause trigger was seen for this long.
    host_pause_hold_s: Seconds = 60.0
    #: The CPUs' thermal-throttle counters rising by at least this many events since the last look
    #: (after a balloon change) also pause shrinking.
    thermal_throttle_increase: Count = 1
    #: Windows guests are never shrunk below this (64-bit Windows needs 2 GiB; it pages hard below) ...
    windows_min_bytes: Bytes = 2 * GiB
    #: ... nor below this share of their max (Windows counts its standby cache as available, so its
    #: "available" overstates what it can give up).
    windows_min_fraction: Fraction = 0.25
    #: On quarantine, also apply the remedy (``model='none'``) to the VM's persistent config. Never to
    #: the running VM: it takes effect at the next boot.
    disable_balloon: bool = False
    #: For every managed VM without autodeflate, turn it on in the persistent config (it cannot change
    #: live): from its next boot, a burst faster than the daemon deflates the balloon instead of
    #: OOM-killing in the guest.
    enable_autodeflate: bool = False

    def __post_init__(self) -> None:
        check_fields(self, (("host_load_clear_factor", "<=", "host_load_factor"),))


DEFAULT_HEALTH = HealthTunables()


#: The kinds of event the guard raises (the controller also logs these at warning level).
EVENT_KINDS = ("quarantine", "release", "pause", "resume")


def remedy(vm: str) -> str:
    """The one command that removes a guest's balloon device (effective at the next boot), quoted for a
    POSIX shell: the operator pastes it, and a VM name is anybody's text."""
    return f"autoballoon balloon {shlex.quote(vm)} --model none"


def autodeflate_command(vm: str) -> str:
    """The command that gives a guest the OOM-time safety net (``deflate-on-oom``) from its next boot."""
    return f"autoballoon balloon {shlex.quote(vm)} --autodeflate on"


def reporting_command(vm: str) -> str:
    """The command that turns on free page reporting from a guest's next boot."""
    return f"autoballoon balloon {shlex.quote(vm)} --free-page-reporting on"


def release_command(vm: str) -> str:
    return f"autoballoon release {shlex.quote(vm)}"


class VMHealth(NamedTuple):
    """What the guard remembers about one VM between ticks."""

    cpu_ns: int | None = None  # cumulative CPU time at the last look
    cpu_at: float | None = None  # snapshot time of ``cpu_ns``
    seen_target: int | None = None
    load: float | None = None  # share of its vCPUs over the last interval
    baseline: float | None = None  # slow average of ``load`` from before the last balloon change
    watched_s: float = 0.0  # seconds of samples in the baseline
    changed_at: float | None = None  # when its balloon target was last lowered (the balloon inflated)
    window_from: float | None = None  # the first change of the current run of changes (for reports)
    hot_since: float | None = None  # start of the current run of storm samples
    #: First seen already ballooned: no sample from before its balloon moved exists, so the guard takes
    #: its first look as the balloon's last move and, until it has a baseline, judges a storm from zero.
    booted_ballooned: bool = False


class Quarantine(NamedTuple):
    since: float  # snapshot time
    until: float | None  # None: until released
    reason: str
    #: Quarantined on a storm with no baseline from before the balloon (it was ballooned when first
    #: seen): deflating it is the measurement. A guest still as hot with its balloon deflated for
    #: ``sustain_s`` is busy by itself and released; one that calms down stays quarantined.
    probe: bool = False


@dataclass(frozen=True, slots=True)
class HealthState:
    """Everything the guard remembers. Start with ``HealthState()``; always pass back the one returned."""

    vms: Mapping[str, VMHealth] = field(default_factory=lambda: MappingProxyType({}))
    quarantined: Mapping[str, Quarantine] = field(default_factory=lambda: MappingProxyType({}))
    #: Why shrinking is paused now (None: it is not).
    paused: str | None = None
    pause_until: float | None = None  # the pause holds at least until then
    last_change: float | None = None  # the last time any VM's balloon target moved
    throttle_count: int | None = None
    time: float | None = None

    def reasons(self) -> Mapping[str, str]:
        """Quarantined VMs and why (for the API and the CLI's ``status`` column)."""
        return {vm: q.reason for vm, q in self.quarantined.items()}


def _ewma(old: float | None, sample: float, dt: float, tau: float) -> float:
    if old is None:
        return sample
    return old + (sample - old) * (1.0 - math.exp(-dt / tau))


def _watch(g: GuestSnapshot, prev: VMHealth | None, now: float, t: HealthTunables) -> VMHealth:
    """The VM's new CPU sample, baseline and change mark (no verdict yet)."""
    if prev is None or g.cpu_time_ns is None:
        # A guest first seen with its balloon inflated has no "before": its first look stands for the
        # balloon's last move, so a storm it is already in is blamed on the balloon, as a storm after an
        # inflation the guard saw would be (the demo's Windows guest boots ballooned and storming).
        ballooned = prev is None and g.target_bytes < g.max_bytes
        mark = now if ballooned else None
        return VMHealth(
            cpu_ns=g.cpu_time_ns,
            cpu_at=now,
            seen_target=g.target_bytes,
            changed_at=mark if prev is None else prev.changed_at,
            window_from=mark if prev is None else prev.window_from,
            booted_ballooned=ballooned or (prev is not None and prev.booted_ballooned),
        )
    changed_at, window_from = prev.changed_at, prev.window_from
    # Only an inflation (a lower target) can make a guest sick; growth gives it memory back.
    moved = prev.seen_target is not None and g.target_bytes < prev.seen_target
    if moved:
        changed_at = prev.cpu_at if prev.cpu_at is not None else now  # set right after the last look
        if window_from is None or prev.changed_at is None or changed_at - prev.changed_at > t.window_s:
            window_from = changed_at
    dt = now - prev.cpu_at if prev.cpu_at is not None else 0.0
    if prev.cpu_ns is not None and g.cpu_time_ns < prev.cpu_ns:  # the guest restarted: start afresh
        return _watch(g, None, now, t)
    if prev.cpu_ns is None or dt <= 0:
        return prev._replace(
            cpu_ns=g.cpu_time_ns,
            cpu_at=now,
            seen_target=g.target_bytes,
            changed_at=changed_at,
            window_from=window_from,
        )
    load = (g.cpu_time_ns - prev.cpu_ns) / (dt * _NS * max(1, g.vcpus))
    baseline, watched = prev.baseline, prev.watched_s
    quiet = not moved and (changed_at is None or now - changed_at > t.window_s + dt)
    # A guest first seen right after a change (the daemon starts on a host over its budget and cuts at
    # once) would otherwise wait a whole window for its first baseline, held from shrinking all along:
    # until it has one, a sample below the storm level counts too, since it cannot be a storm.
    first = baseline is None or watched < t.baseline_min_s
    if quiet or (first and not moved and load < t.cpu_level):
        # a sample no balloon change can explain (or no storm): it is the guest's own load
        baseline = _ewma(baseline, load, dt, t.baseline_tau_s)
        watched += dt
    return VMHealth(
        cpu_ns=g.cpu_time_ns,
        cpu_at=now,
        seen_target=g.target_bytes,
        load=load,
        baseline=baseline,
        watched_s=watched,
        changed_at=changed_at,
        window_from=window_from,
        hot_since=prev.hot_since,
        booted_ballooned=prev.booted_ballooned and baseline is None,
    )


def _unwatched(h: VMHealth) -> VMHealth:
    """A released VM's record: its CPU samples and baseline kept, but no balloon change or storm run
    remembered, so only a new inflation after the release can quarantine it again."""
    return h._replace(changed_at=None, window_from=None, hot_since=None)


def _storm(vm: VMHealth, start: float, t: HealthTunables) -> float | None:
    """The new start of the VM's storm run, or None if this sample is no storm the balloon can explain."""
    baseline = vm.baseline if vm.baseline is not None else (0.0 if vm.booted_ballooned else None)
    if vm.load is None or baseline is None or vm.changed_at is None:
        return None
    hot = vm.load >= t.cpu_level and vm.load >= baseline + t.baseline_margin
    if not hot:
        return None
    if vm.hot_since is not None:
        return vm.hot_since
    return start if start - vm.changed_at <= t.window_s else None


def _probe(
    g: GuestSnapshot, h: VMHealth, quarantined: dict[str, Quarantine], start: float, t: HealthTunables
) -> tuple[VMHealth, Event | None]:
    """A quarantined guest's record, and the end of a probe (see :attr:`Quarantine.probe`): with its
    balloon deflated (``actual`` at max), a guest that stays at the storm level for ``sustain_s`` was
    busy by itself: it is released and keeps that load as its baseline, so it is not blamed again; one
    that calms down was storming because of the balloon and stays quarantined."""
    q = quarantined[g.name]
    deflated = g.actual_bytes is not None and g.actual_bytes >= g.max_bytes
    if not q.probe or not deflated or h.load is None:
        return h._replace(hot_since=None), None
    if h.load < t.cpu_level:
        quarantined[g.name] = q._replace(probe=False)
        return h._replace(hot_since=None), None
    hot_since = h.hot_since if h.hot_since is not None else start
    if (h.cpu_at or start) - hot_since < t.sustain_s:
        return h._replace(hot_since=hot_since), None
    del quarantined[g.name]
    load = h.load * _PERCENT
    message = (
        f"{g.name}: released: still at {load:.0f}% of its vCPUs with its balloon deflated, so its own "
        f"load and not the balloon's; ballooned again, with that load as its baseline"
    )
    released = _unwatched(h)._replace(baseline=h.load, watched_s=max(h.watched_s, t.baseline_min_s))
    return released._replace(booted_ballooned=False), Event(g.name, "release", message, {"probe": True})


def _quarantine_reason(vm: str, h: VMHealth, vcpus: int, t: HealthTunables) -> str:
    load = (h.load or 0.0) * _PERCENT
    base = (
        f"baseline {h.baseline * _PERCENT:.0f}%"
        if h.baseline is not None
        else "ballooned when first seen, so no baseline from before; released by itself if it stays as hot "
        "once deflated"
    )
    return (
        f"CPU storm after ballooning: {load:.0f}% of {vcpus} vCPU{'s' if vcpus != 1 else ''} for "
        f"{t.sustain_s:g} s ({base}); deflated to max and not ballooned until "
        f"'{release_command(vm)}'; remedy: '{remedy(vm)}' (takes effect at the next boot)"
    )


def observe(
    snapshot: HostSnapshot, state: HealthState, tunables: HealthTunables = DEFAULT_HEALTH
) -> tuple[HealthState, tuple[Event, ...]]:
    """Measure every guest and the host; quarantine storms, expire quarantines, pause or resume shrinking."""
    t = tunables
    now = snapshot.time
    if not t.enabled:
        return replace(state, time=now), ()
    events: list[Event] = []
    quarantined = dict(state.quarantined)
    for vm, q in state.quarantined.items():
        if q.until is not None and now >= q.until:
            del quarantined[vm]
            events.append(
                Event(vm, "release", f"{vm}: quarantine ended after {now - q.since:.0f} s; ballooned again")
            )
    vms: dict[str, VMHealth] = {}
    last_change = state.last_change
    for g in snapshot.guests:
        prev = state.vms.get(g.name)
        if not g.state.active or not g.balloon.enabled:
            continue  # forgotten: a VM that comes back starts a fresh baseline
        if prev is not None and g.name in state.quarantined and g.name not in quarantined:
            prev = _unwatched(prev)  # its quarantine just ended
        start = prev.cpu_at if prev is not None and prev.cpu_at is not None else now
        h = _watch(g, prev, now, t)
        if h.changed_at is not None and h.changed_at != (prev.changed_at if prev else None):
            last_change = h.changed_at if last_change is None else max(last_change, h.changed_at)
        if g.name in quarantined:
            h, event = _probe(g, h, quarantined, start, t)
            if event is not None:
                events.append(event)
            vms[g.name] = h
            continue
        hot_since = _storm(h, start, t)
        h = h._replace(hot_since=hot_since)
        if hot_since is not None and now - hot_since >= t.sustain_s:
            reason = _quarantine_reason(g.name, h, g.vcpus, t)
            until = now + t.quarantine_s if t.quarantine_s > 0 else None
            quarantined[g.name] = Quarantine(now, until, reason, probe=h.baseline is None)
            assert h.changed_at is not None  # _storm() needs a change
            first = h.window_from if h.window_from is not None else h.changed_at
            fields = {"remedy": remedy(g.name), "detect_s": now - first}
            events.append(Event(g.name, "quarantine", f"{g.name}: quarantined: {reason}", fields))
            h = h._replace(hot_since=None)
        vms[g.name] = h
    paused, until, pause_event = _host_pause(snapshot, state, last_change, t)
    if pause_event is not None:
        events.append(pause_event)
    new = HealthState(
        vms=MappingProxyType(vms),
        quarantined=MappingProxyType(quarantined),
        paused=paused,
        pause_until=until,
        last_change=last_change,
        throttle_count=snapshot.thermal_throttle_count,
        time=now,
    )
    return new, tuple(events)


def _host_pause(
    snapshot: HostSnapshot, state: HealthState, last_change: float | None, t: HealthTunables
) -> tuple[str | None, float | None, Event | None]:
    """(why shrinking is paused or None, until when at least, the event if that changed)."""
    now = snapshot.time
    cores = max(1, snapshot.cpu_count)
    load = snapshot.load_avg1
    triggers = []
    if load is not None and load > t.host_load_factor * cores:
        triggers.append(f"host load {load:.1f} on {cores} CPUs (above {t.host_load_factor:g} per CPU)")
    count, before = snapshot.thermal_throttle_count, state.throttle_count
    if count is not None and before is not None and count - before >= t.thermal_throttle_increase:
        triggers.append(f"CPU thermal throttling (+{count - before} events)")
    if state.paused is None:
        recent = last_change is not None and now - last_change <= t.window_s
        if not triggers or not recent:
            return None, None, None
        why = " and ".join(triggers) + " after balloon changes"
        return why, now + t.host_pause_hold_s, Event(None, "pause", f"shrinking paused: {why}")
    if triggers:
        return state.paused, now + t.host_pause_hold_s, None
    calm = load is None or load <= t.host_load_clear_factor * cores
    if calm and (state.pause_until is None or now >= state.pause_until):
        message = "shrinking resumed: host load and CPU temperature back to normal"
        return None, None, Event(None, "resume", message)
    return state.paused, state.pause_until, None


def release(state: HealthState, vm: str, now: float) -> HealthState:
    """An operator's release: the VM is ballooned again from the next decision, with a fresh storm watch.

    The caller checks that ``vm`` is quarantined (``vm in state.quarantined``)."""
    quarantined = {k: v for k, v in state.quarantined.items() if k != vm}
    vms = dict(state.vms)
    if vm in vms:
        vms[vm] = _unwatched(vms[vm])
    return replace(state, quarantined=MappingProxyType(quarantined), vms=MappingProxyType(vms), time=now)


def shrink_hold(
    state: HealthState, guest: GuestSnapshot, tunables: HealthTunables = DEFAULT_HEALTH
) -> str | None:
    """Why the guard forbids shrinking this VM now, or None: the host is paused, or the guard has not yet
    watched the guest's CPU long enough to tell a storm from its own load (a guest whose CPU time is
    not reported cannot be watched, and is not held for it)."""
    if not tunables.enabled:
        return None
    if state.paused is not None:
        return state.paused
    if guest.cpu_time_ns is None:
        return None
    h = state.vms.get(guest.name)
    if h is None or h.baseline is None or h.watched_s < tunables.baseline_min_s:
        return "waiting for a CPU baseline (health guard)"
    return None


__all__ = [
    "DEFAULT_HEALTH",
    "EVENT_KINDS",
    "HealthState",
    "HealthTunables",
    "Quarantine",
    "VMHealth",
    "observe",
    "release",
    "remedy",
    "shrink_hold",
]
