"""One tick of any policy, and the one safety gate every plan passes through.

The controller and the evaluation harness both call :func:`step`: the health guard observes the
snapshot, the policy decides with the guard's verdicts and each VM's effective policy, and the plan goes
through :func:`gate` before anyone applies it. The gate is where the rules that protect a guest are
enforced, whatever the policy: a policy may be wrong, new or a published reference, and none of them can
send a target outside the rules, because no caller applies a plan that has not passed here.

The rules, per action:

- a VM the snapshot does not know, or one that is excluded (policy, not running, no balloon), is not
  touched: the action is dropped;
- a VM its backend holds (paused, migrating, host memory unknown: :func:`safety.hands_off`) is left
  untouched: the action is dropped;
- a quarantined VM is not inflated: an action that lowers its target is dropped;
- every target stays within the VM's floor and ceiling (:func:`safety.limits`, with the Windows floor
  of the health guard), and a VM without fresh stats is never shrunk (:func:`safety.hold_reason`).

An action the gate changed or dropped is reported as a ``gate`` event, so that a policy's mistake is seen
in the journal instead of being applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from autoballoon import safety
from autoballoon.health import DEFAULT_HEALTH, HealthState, HealthTunables, observe
from autoballoon.model import Action, Event, GuestPolicy, GuestSnapshot, HostSnapshot, Plan
from autoballoon.policy.inputs import Inputs, effective_policy
from autoballoon.tunables import Tunables
from autoballoon.units import human


class Decides(Protocol):
    """The part of a policy a tick drives."""

    @property
    def name(self) -> str: ...

    def initial_state(self) -> Any: ...

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: Any) -> tuple[Plan, Any]: ...


@dataclass(frozen=True, slots=True)
class TickState:
    """What a tick remembers: the policy's own state and the health guard's."""

    policy: Any = None
    health: HealthState = field(default_factory=HealthState)


@dataclass(frozen=True, slots=True)
class Tick:
    plan: Plan  # gated: what may be applied as it is
    state: TickState
    guard_events: tuple[Event, ...] = ()  # the health guard's, before the plan's own events


def start(policy: Decides) -> TickState:
    return TickState(policy=policy.initial_state())


def _refusal(g: GuestSnapshot | None, action: Action, inputs: Inputs) -> str | None:
    """Why the action may not touch its VM at all, or None."""
    if g is None:
        return "no such VM in the snapshot"
    excluded = safety.exclusion(g, effective_policy(g, inputs))
    if excluded is not None:
        return excluded
    if safety.hands_off(g):
        return g.hold or f"VM is {g.state.value}"
    if g.name in inputs.health.quarantined and action.new_target < g.target_bytes:
        return "quarantined: its balloon is never inflated"
    return None


def gate_action(
    action: Action, g: GuestSnapshot | None, snapshot: HostSnapshot, inputs: Inputs, t: Tunables
) -> tuple[Action | None, str | None]:
    """The action as it may be applied (None: not at all), and what the gate did to it (None: nothing)."""
    refused = _refusal(g, action, inputs)
    if refused is not None or g is None:
        return None, f"dropped ({refused})"
    floor, ceiling = safety.limits(g, effective_policy(g, inputs), t)
    fresh = safety.hold_reason(g, snapshot.wall_time, t) is None
    current = g.target_bytes
    safe = safety.safe_target(action.new_target, current, floor, ceiling, may_shrink=fresh)
    if safe == action.new_target and action.old_target == current:
        return action, None
    why = (
        f"target {human(action.new_target)} is outside {human(floor)}..{human(ceiling)}"
        if not floor <= action.new_target <= ceiling
        else f"no shrink without fresh stats ({safety.hold_reason(g, snapshot.wall_time, t)})"
        if safe != action.new_target
        else f"its old target is {human(current)}, not {human(action.old_target)}"
    )
    if safe == current and action.new_target != current:
        return None, f"dropped ({why})"
    return action._replace(old_target=current, new_target=safe), f"set to {human(safe)} ({why})"


def gate(plan: Plan, snapshot: HostSnapshot, inputs: Inputs, t: Tunables, policy: str = "") -> Plan:
    """The plan with every action held to the rules (see the module's docstring)."""
    guests: Mapping[str, GuestSnapshot] = {g.name: g for g in snapshot.guests}
    actions: list[Action] = []
    events: list[Event] = []
    for action in plan.actions:
        kept, note = gate_action(action, guests.get(action.vm), snapshot, inputs, t)
        if kept is not None:
            actions.append(kept)
        if note is not None:
            message = (
                f"{action.vm}: the safety gate {note}: policy {policy or '?'} asked "
                f"{human(action.old_target)}→{human(action.new_target)} ({action.reason})"
            )
            events.append(Event(action.vm, "gate", message, {"asked": action.new_target, "policy": policy}))
    if not events:
        return plan
    return replace(plan, actions=tuple(actions), events=(*plan.events, *events))


def step(
    policy: Decides,
    snapshot: HostSnapshot,
    state: TickState,
    tunables: Tunables,
    *,
    policies: Mapping[str, GuestPolicy] | None = None,
    os_types: Mapping[str, str] | None = None,
    health_tunables: HealthTunables = DEFAULT_HEALTH,
) -> Tick:
    """One tick: observe (health guard), decide (the policy), gate. Pure: time is the snapshot's."""
    health, guard_events = observe(snapshot, state.health, health_tunables)
    inputs = Inputs(
        policies=policies or {}, health=health, health_tunables=health_tunables, os_types=os_types or {}
    )
    plan, policy_state = policy.decide(snapshot, inputs, state.policy)
    plan = gate(plan, snapshot, inputs, tunables, policy.name)
    return Tick(plan, TickState(policy_state, health), tuple(guard_events))
