"""The default balloon policy: a pure function from a host snapshot to a plan, in four phases.

``decide(snapshot, inputs, state, tunables) -> (plan, state)`` reads nothing but its arguments (time is
``snapshot.time``), so the controller, the tests and the evaluation harness run exactly the same code.
Everything it remembers between ticks lives in :class:`PolicyState`, a frozen value the caller passes back.
One decision is four phases, each a module of this package, in this order:

1. **classify** (:mod:`.classify`) — which VMs may be moved at all and within what limits: excluded,
   quarantined by the health guard, held after a manual change, stuck, without fresh stats, or managed.
   The rules are the small pure functions of :mod:`autoballoon.safety`; the guard's verdicts come in
   through ``inputs``.
2. **estimate** (:mod:`.estimate`; the tiers in :mod:`.tiers`) — each managed VM's demand (rises at once,
   decays slowly, raised by pressure and by a rising trend) and three tiers of memory: its *OOM floor*
   (below it the guest is OOM-killed), its *need* (below it the guest is under pressure) and its *want*
   (the need plus a cushion that holds what the guest can allocate within one reaction time of the
   daemon, sized from the reaction time, a growth allowance, a prior for a first burst and the jumps the
   guest has shown, remembered for hours).
3. **allocate** (:mod:`.allocate`) — share the host's budget: every guest gets its want when the wants
   fit; when they do not, the cushions are cut (a water-fill by shares, the largest first) before anyone
   drops below its need, and every need before anyone drops below its OOM floor. Targets then move
   toward those goals: growth at once, paid from memory that is free now; shrinking gradually, with a
   dead band, never while the guest is under pressure (unless the host itself is in danger) and one step
   per fresh stats report.
4. **emit** (:mod:`.emit`) — the actions with their reasons, the events an operator must hear about,
   and the state to remember.

What it remembers is :mod:`.state`; :func:`decide` below only calls the phases in order.

The order of harms it is built around, worst first: a process OOM-killed in a guest; the host below its
reserve; a guest under pressure (swapping); memory left unreclaimed.
"""

from __future__ import annotations

from types import MappingProxyType

from autoballoon.model import GuestDecision, HostSnapshot, Plan
from autoballoon.policy.default import allocate, classify, emit, estimate, profile
from autoballoon.policy.default.allocate import host_reserve
from autoballoon.policy.default.classify import Verdict
from autoballoon.policy.default.estimate import Estimates, reaction_time
from autoballoon.policy.default.state import GuestRecord, PolicyState
from autoballoon.policy.inputs import Inputs
from autoballoon.tunables import Tunables


def decide(
    snapshot: HostSnapshot, inputs: Inputs, state: PolicyState, tunables: Tunables
) -> tuple[Plan, PolicyState]:
    """One decision: the plan for this snapshot and the state to pass to the next call."""
    t = tunables
    managed, others = classify.classify(snapshot, inputs, state, t)
    estimates = estimate.estimate(managed, snapshot.time, t)
    estimates = profile.anticipate(estimates, snapshot.wall_time, t)
    budget = allocate.host_budget(snapshot, others, managed, t)
    allocation = allocate.allocate(estimates, budget, t)
    danger, limit = allocation.danger, budget.budget
    tiers = emit.Tiers(
        allocation.targets, allocation.wants, allocation.oom_floors, allocation.needs, allocation.goals
    )
    m = emit.emit_managed(estimates, tiers, danger, limit, snapshot, t)
    held = [emit.emit_other(v, limit, snapshot) for v in others]
    actions = [*m.actions, *(x.action for x in held if x.action is not None)]
    events = [*m.events, *(event for x in held for event in x.events)]
    reserve = emit.reserve_event(allocation, budget, state.reserve_spent)
    if reserve is not None:
        events.append(reserve)
    names = [v.guest.name for v in (*managed, *others)]
    status = [*m.status, *(x.status for x in held)]
    reasons = [*m.reasons, *(x.reason for x in held)]
    decisions = [*m.decisions, *(x.decision for x in held)]
    records = [*m.records, *(x.record for x in held)]
    plan = Plan(
        actions=tuple(actions),
        status=dict(zip(names, status, strict=True)),
        status_reason=dict(zip(names, reasons, strict=True)),
        budget=budget.budget,
        reserve=budget.reserve,
        host_short=allocation.short or allocation.danger,
        reserve_spent=allocation.reserve_spent,
        guests=dict(zip(names, decisions, strict=True)),
        events=tuple(events),
    )
    remembered = dict(zip(names, records, strict=True))
    state = PolicyState(MappingProxyType(remembered), snapshot.time, allocation.reserve_spent)
    return plan, state


__all__ = [
    "Estimates",
    "GuestDecision",
    "GuestRecord",
    "Inputs",
    "PolicyState",
    "Verdict",
    "allocate",
    "classify",
    "decide",
    "emit",
    "estimate",
    "host_reserve",
    "profile",
    "reaction_time",
]
