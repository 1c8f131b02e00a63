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
  baseline a storm could not be told from a busy guest).
- **Host pause.** When the host's load average rises above ``host_load_factor`` times its CPU count, or
  its CPUs' thermal-throttle counters climb, within ``window_s`` of a balloon change, every *shrink* is
  suppressed (growth never is) until the load is back under ``host_load_clear_factor`` times the cores
  and nothing throttled for ``host_pause_hold_s``.

The remedy for a storming guest is to remove its balloon device: ``autoballoon balloon VM --model none``
(the device cannot simply be deleted; the change takes effect at the next boot). Every quarantine names it.

Like the policy this is pure: :func:`observe` and :func:`guard_plan` read only their arguments (time is
``snapshot.time``) and everything remembered lives in a frozen :class:`HealthState`. :func:`step` runs
guard, policy and guard again in the order the controller and the evaluation harness both use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

from autoballoon import guards
from autoballoon.model import Action, GuestPolicy, GuestSnapshot, HostSnapshot, Plan
from autoballoon.policy import PolicyState, decide
from autoballoon.tunables import Tunables
from autoballoon.units import GiB

_NS = 1e9
_PERCENT = 100.0


@dataclass(frozen=True, slots=True)
class HealthTunables:
    """The knobs of the health guard (config ``[guard]``). Shares of CPU are of the guest's vCPUs."""

    #: Turn the whole guard off (no storm detection, no host pause, no Windows floor).
    enabled: bool = True
    #: A guest at this share of its vCPUs or more is spinning (the WMI storm shows ~100 %).
    cpu_level: float = 0.9
    #: ... for at least this long without a break before it is quarantined (a short burst is no storm).
    sustain_s: float = 30.0
    #: The storm must start within this long after the balloon target last moved to be blamed on it.
    window_s: float = 300.0
    #: ... and be at least this share of its vCPUs above the guest's baseline from before the change.
    baseline_margin: float = 0.4
    #: Time constant of the baseline's moving average of CPU use.
    baseline_tau_s: float = 60.0
    #: CPU seconds of observation needed before a guest may be shrunk at all (its first baseline).
    baseline_min_s: float = 4.0
    #: A quarantine ends by itself after this long (0: only ``autoballoon release`` ends it).
    quarantine_s: float = 86400.0
    #: Shrinking pauses when the host's 1-minute load average exceeds this many times its CPU count ...
    host_load_factor: float = 2.0
    #: ... and resumes once it is back at or under this many times its CPU count ...
    host_load_clear_factor: float = 1.0
    #: ... and no pause trigger was seen for this long.
    host_pause_hold_s: float = 60.0
    #: The CPUs' thermal-throttle counters rising by at least this many events since the last look
    #: (after a balloon change) also pause shrinking.
    thermal_throttle_increase: int = 1
    #: Windows guests are never shrunk below this (64-bit Windows needs 2 GiB; it pages hard below) ...
    windows_min_bytes: int = 2 * GiB
    #: ... nor below this share of their max (Windows counts its standby cache as available, so its
    #: "available" overstates what it can give up).
    windows_min_fraction: float = 0.25
    #: On quarantine, also apply the remedy (``model='none'``) to the VM's persistent config. Never to
    #: the running VM: it takes effect at the next boot.
    disable_balloon: bool = False


DEFAULT_HEALTH = HealthTunables()


def remedy(vm: str) -> str:
    """The one command that removes a guest's balloon device (effective at the next boot)."""
    return f"autoballoon balloon {vm} --model none"


def release_command(vm: str) -> str:
    return f"autoballoon release {vm}"


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


class Quarantine(NamedTuple):
    since: float  # snapshot time
    until: float | None  # None: until released
    reason: str


class HealthEvent(NamedTuple):
    """Something the operator must hear about; ``kind`` is the journal kind."""

    vm: str | None
    kind: str  # "quarantine", "release", "pause", "resume"
    message: str
    #: quarantine: seconds from the first balloon change of the run that led to it, to the detection
    detect_s: float | None = None


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
        """Quarantined VMs and why, as :class:`~autoballoon.policy.PolicyState` takes them."""
        return {vm: q.reason for vm, q in self.quarantined.items()}


def _ewma(old: float | None, sample: float, dt: float, tau: float) -> float:
    if old is None:
        return sample
    return old + (sample - old) * (1.0 - math.exp(-dt / tau))


def _watch(g: GuestSnapshot, prev: VMHealth | None, now: float, t: HealthTunables) -> VMHealth:
    """The VM's new CPU sample, baseline and change mark (no verdict yet)."""
    if prev is None or g.cpu_time_ns is None:
        return VMHealth(cpu_ns=g.cpu_time_ns, cpu_at=now, seen_target=g.target_bytes)
    changed_at, window_from = prev.changed_at, prev.window_from
    # Only an inflation (a lower target) can make a guest sick; growth gives it memory back.
    moved = prev.seen_target is not None and g.target_bytes < prev.seen_target
    if moved:
        changed_at = prev.cpu_at if prev.cpu_at is not None else now  # set right after the last look
        if window_from is None or prev.changed_at is None or changed_at - prev.changed_at > t.window_s:
            window_from = changed_at
    dt = now - prev.cpu_at if prev.cpu_at is not None else 0.0
    if prev.cpu_ns is not None and g.cpu_time_ns < prev.cpu_ns:  # the guest restarted: start afresh
        return VMHealth(cpu_ns=g.cpu_time_ns, cpu_at=now, seen_target=g.target_bytes)
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
    if quiet:  # a sample no balloon change can explain: it is the guest's own load
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
    )


def _unwatched(h: VMHealth) -> VMHealth:
    """A released VM's record: its CPU samples and baseline kept, but no balloon change or storm run
    remembered, so only a new inflation after the release can quarantine it again."""
    return h._replace(changed_at=None, window_from=None, hot_since=None)


def _storm(vm: VMHealth, start: float, t: HealthTunables) -> float | None:
    """The new start of the VM's storm run, or None if this sample is no storm the balloon can explain."""
    if vm.load is None or vm.baseline is None or vm.changed_at is None:
        return None
    hot = vm.load >= t.cpu_level and vm.load >= vm.baseline + t.baseline_margin
    if not hot:
        return None
    if vm.hot_since is not None:
        return vm.hot_since
    return start if start - vm.changed_at <= t.window_s else None


def _quarantine_reason(vm: str, h: VMHealth, vcpus: int, t: HealthTunables) -> str:
    load = (h.load or 0.0) * _PERCENT
    base = (h.baseline or 0.0) * _PERCENT
    return (
        f"CPU storm after ballooning: {load:.0f}% of {vcpus} vCPU{'s' if vcpus != 1 else ''} for "
        f"{t.sustain_s:g} s (baseline {base:.0f}%); deflated to max and not ballooned until "
        f"'{release_command(vm)}'; remedy: '{remedy(vm)}' (takes effect at the next boot)"
    )


def observe(
    snapshot: HostSnapshot, state: HealthState, tunables: HealthTunables = DEFAULT_HEALTH
) -> tuple[HealthState, tuple[HealthEvent, ...]]:
    """Measure every guest and the host; quarantine storms, expire quarantines, pause or resume shrinking."""
    t = tunables
    now = snapshot.time
    if not t.enabled:
        return replace(state, time=now), ()
    events: list[HealthEvent] = []
    quarantined = dict(state.quarantined)
    for vm, q in state.quarantined.items():
        if q.until is not None and now >= q.until:
            del quarantined[vm]
            events.append(
                HealthEvent(
                    vm, "release", f"{vm}: quarantine ended after {now - q.since:.0f} s; ballooned again"
                )
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
            vms[g.name] = h._replace(hot_since=None)
            continue
        hot_since = _storm(h, start, t)
        h = h._replace(hot_since=hot_since)
        if hot_since is not None and now - hot_since >= t.sustain_s:
            reason = _quarantine_reason(g.name, h, g.vcpus, t)
            until = now + t.quarantine_s if t.quarantine_s > 0 else None
            quarantined[g.name] = Quarantine(since=now, until=until, reason=reason)
            assert h.changed_at is not None  # _storm() needs a change
            first = h.window_from if h.window_from is not None else h.changed_at
            events.append(HealthEvent(g.name, "quarantine", f"{g.name}: quarantined: {reason}", now - first))
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
) -> tuple[str | None, float | None, HealthEvent | None]:
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
        return why, now + t.host_pause_hold_s, HealthEvent(None, "pause", f"shrinking paused: {why}")
    if triggers:
        return state.paused, now + t.host_pause_hold_s, None
    calm = load is None or load <= t.host_load_clear_factor * cores
    if calm and (state.pause_until is None or now >= state.pause_until):
        message = "shrinking resumed: host load and CPU temperature back to normal"
        return None, None, HealthEvent(None, "resume", message)
    return state.paused, state.pause_until, None


def release(state: HealthState, vm: str, now: float) -> HealthState:
    """An operator's release: the VM is ballooned again from the next decision, with a fresh storm watch.

    The caller checks that ``vm`` is quarantined (``vm in state.quarantined``)."""
    quarantined = {k: v for k, v in state.quarantined.items() if k != vm}
    vms = dict(state.vms)
    if vm in vms:
        vms[vm] = _unwatched(vms[vm])
    return replace(state, quarantined=MappingProxyType(quarantined), vms=MappingProxyType(vms), time=now)


def os_policies(
    snapshot: HostSnapshot,
    policies: Mapping[str, GuestPolicy],
    os_types: Mapping[str, str],
    tunables: HealthTunables = DEFAULT_HEALTH,
) -> dict[str, GuestPolicy]:
    """``policies`` with the Windows floor applied to every Windows guest (``os_types`` overrides what
    the backend detected)."""
    out = dict(policies)
    if not tunables.enabled:
        return out
    for g in snapshot.guests:
        os_type = os_types.get(g.name, g.os_type)
        if os_type == "windows":
            base = out.get(g.name) or g.policy
            out[g.name] = guards.os_floor(
                base,
                os_type,
                g.max_bytes,
                min_bytes=tunables.windows_min_bytes,
                min_fraction=tunables.windows_min_fraction,
            )
    return out


def guard_plan(
    plan: Plan,
    snapshot: HostSnapshot,
    state: HealthState,
    ceilings: Mapping[str, int],
    tunables: HealthTunables = DEFAULT_HEALTH,
) -> Plan:
    """The policy's plan, made safe: quarantined VMs go to their ceiling and nothing else; while the host
    is paused, or while a VM has no CPU baseline yet, its shrink waits."""
    if not tunables.enabled:
        return plan
    reasons = dict(plan.status_reason)
    actions: list[Action] = []
    for a in plan.actions:
        if a.vm in state.quarantined:
            continue
        if a.direction == "shrink":
            if state.paused is not None:
                reasons[a.vm] = f"shrink to {a.new_target} B held: {state.paused}"
                continue
            h = state.vms.get(a.vm)
            g = snapshot.guest(a.vm)
            watchable = g is not None and g.cpu_time_ns is not None
            if watchable and (h is None or h.baseline is None or h.watched_s < tunables.baseline_min_s):
                reasons[a.vm] = "shrink waits for a CPU baseline (health guard)"
                continue
        actions.append(a)
    for vm in state.quarantined:
        g = snapshot.guest(vm)
        if g is None or not g.state.active or not g.balloon.enabled:
            continue
        ceiling = ceilings.get(vm, g.max_bytes)
        if g.target_bytes < ceiling:
            actions.append(
                Action(
                    vm, g.target_bytes, ceiling, "quarantine", available=g.stats.available, budget=plan.budget
                )
            )
    return replace(plan, actions=tuple(actions), status_reason=reasons)


def ceilings(
    snapshot: HostSnapshot, policies: Mapping[str, GuestPolicy], tunables: Tunables
) -> dict[str, int]:
    """Each quarantined-or-not VM's ceiling (its max, or a lower policy max): where a quarantine sends it."""
    return {g.name: guards.limits(g, policies.get(g.name) or g.policy, tunables)[1] for g in snapshot.guests}


class Step(NamedTuple):
    plan: Plan
    policy_state: PolicyState
    health_state: HealthState
    events: tuple[HealthEvent, ...]


def step(
    snapshot: HostSnapshot,
    policies: Mapping[str, GuestPolicy],
    policy_state: PolicyState,
    health_state: HealthState,
    tunables: Tunables,
    health: HealthTunables = DEFAULT_HEALTH,
    os_types: Mapping[str, str] | None = None,
) -> Step:
    """One decision with the guard around the policy: observe → decide (quarantined VMs held) → guard.

    The controller and the evaluation harness both call this, so what is measured is what runs.
    """
    hstate, events = observe(snapshot, health_state, health)
    effective = os_policies(snapshot, policies, os_types or {}, health)
    pstate = replace(policy_state, quarantined=MappingProxyType(dict(hstate.reasons())))
    plan, pstate = decide(snapshot, effective, pstate, tunables)
    limits = ceilings(snapshot, effective, tunables) if hstate.quarantined else {}
    plan = guard_plan(plan, snapshot, hstate, limits, health)
    return Step(plan, pstate, hstate, events)


__all__ = [
    "DEFAULT_HEALTH",
    "HealthEvent",
    "HealthState",
    "HealthTunables",
    "Quarantine",
    "Step",
    "VMHealth",
    "guard_plan",
    "observe",
    "os_policies",
    "release",
    "remedy",
    "step",
]
