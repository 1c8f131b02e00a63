"""The published reference policies (oVirt MOM, Proxmox VE, no ballooning) as daemon policies.

The daemon runs them through the same controller as the default policy, so an operator can compare
policies on their own host (``autoballoon run --policy mom --dry-run``) and the real-guest benchmark
measures them on real guests. Their algorithms are the pure cores in :mod:`.mom` and :mod:`.proxmox`,
exactly as the evaluation harness runs them; this module adds only what every policy the daemon runs
must obey, whatever its algorithm:

- a VM that is excluded, not running or without a balloon is not touched;
- a VM without fresh guest stats is never shrunk; a quarantined one goes to its ceiling and stays;
- no target above the VM's ``<memory>`` (or policy max) or below its floor.

With a configured host budget (``[host] budget``) the reference policies see a host whose RAM *is* the
budget: they know nothing of budgets, and this is what makes them respect one (both aim at a share of
their host's RAM). Without one, they see the host as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from autoballoon import safety
from autoballoon.model import Action, GuestDecision, HostSnapshot, Plan, Status
from autoballoon.policy import mom, proxmox
from autoballoon.policy.default import host_reserve
from autoballoon.policy.inputs import Inputs
from autoballoon.policy.mom import MomState  # the class's `mom` field hides the module in its annotations
from autoballoon.tunables import Tunables


def budget_view(snapshot: HostSnapshot, inputs: Inputs, t: Tunables) -> HostSnapshot:
    """The snapshot a reference policy sees: each guest with its effective policy and, with a configured
    budget, a host whose RAM is that budget and whose free memory is what the ballooned VMs leave of it
    (never more than the real host has free above its reserve)."""
    guests = tuple(replace(g, policy=inputs.policies.get(g.name) or g.policy) for g in snapshot.guests)
    view = replace(snapshot, guests=guests)
    budget = t.host_budget_bytes
    if budget is None:
        return view
    held = sum(
        g.actual_bytes if g.actual_bytes is not None else g.target_bytes
        for g in guests
        if safety.exclusion(g, g.policy) is None
    )
    free = min(budget - held, snapshot.mem_available - host_reserve(snapshot, t))
    return replace(view, mem_total=budget, mem_available=max(0, free))


def safe_plan(name: str, view: HostSnapshot, targets: Mapping[str, int], inputs: Inputs, t: Tunables) -> Plan:
    """The rules every daemon policy obeys, applied to a reference algorithm's targets as it makes its
    plan: a VM it may not touch keeps its target (a quarantined one goes to its ceiling), the others'
    targets are clamped into ``[floor, ceiling]`` and never shrunk without fresh stats."""
    actions: list[Action] = []
    status: dict[str, str] = {}
    reasons: dict[str, str] = {}
    decisions: dict[str, GuestDecision] = {}
    quarantined = inputs.health.quarantined
    for g in view.guests:
        floor, ceiling = safety.limits(g, g.policy, t)
        decisions[g.name] = GuestDecision(floor=floor, ceiling=ceiling)
        excluded = safety.exclusion(g, g.policy)
        if excluded is not None:
            status[g.name], reasons[g.name] = Status.EXCLUDED, excluded
            continue
        if g.name in quarantined:
            status[g.name], reasons[g.name] = Status.QUARANTINED, quarantined[g.name].reason
            if g.target_bytes < ceiling:
                actions.append(Action(g.name, g.target_bytes, ceiling, "quarantine"))
            continue
        hold = safety.hold_reason(g, view.wall_time, t)
        status[g.name] = Status.NO_STATS if hold is not None else Status.MANAGED
        reasons[g.name] = hold or ""
        if g.name not in targets:
            continue
        new = safety.safe_target(targets[g.name], g.target_bytes, floor, ceiling, may_shrink=hold is None)
        if new != g.target_bytes:
            direction = "grow" if new > g.target_bytes else "shrink"
            actions.append(
                Action(g.name, g.target_bytes, new, f"{name}-{direction}", available=g.stats.available)
            )
    return Plan(
        actions=tuple(actions),
        status=status,
        status_reason=reasons,
        budget=t.host_budget_bytes,
        reserve=host_reserve(view, t),
        guests=decisions,
    )


@dataclass(frozen=True, slots=True)
class MomPolicy:
    """oVirt MOM's default balloon rules: samples every 5 s, decides on every second sample."""

    tunables: Tunables
    mom: mom.MomTunables = mom.DEFAULT_MOM
    name: str = "mom"

    @property
    def interval_s(self) -> float:
        return self.mom.sample_interval_s

    def initial_state(self) -> MomState:
        return MomState()

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: MomState) -> tuple[Plan, MomState]:
        view = budget_view(snapshot, inputs, self.tunables)
        state = mom.observe(state, view, self.mom)
        targets = mom.decide(state, view, self.mom) if mom.decides(state, self.mom) else {}
        return safe_plan(self.name, view, targets, inputs, self.tunables), state


@dataclass(frozen=True, slots=True)
class ProxmoxPolicy:
    """Proxmox VE's pvestatd auto-balloon: stateless, every 10 s."""

    tunables: Tunables
    proxmox: proxmox.ProxmoxTunables = proxmox.DEFAULT_PROXMOX
    name: str = "proxmox"

    @property
    def interval_s(self) -> float:
        return self.proxmox.interval_s

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: None) -> tuple[Plan, None]:
        view = budget_view(snapshot, inputs, self.tunables)
        return safe_plan(self.name, view, proxmox.decide(view, self.proxmox), inputs, self.tunables), None


@dataclass(frozen=True, slots=True)
class StaticPolicy:
    """No ballooning: every VM keeps the target it has (quarantines are still honoured)."""

    tunables: Tunables
    name: str = "static"

    @property
    def interval_s(self) -> float:
        return self.tunables.interval_s

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: None) -> tuple[Plan, None]:
        view = budget_view(snapshot, inputs, self.tunables)
        return safe_plan(self.name, view, {}, inputs, self.tunables), None
