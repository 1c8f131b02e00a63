"""Balloon policies: the default one and the published references, behind one small interface.

A policy is an object with a ``name``, the ``interval_s`` it wants to be called at, an
``initial_state()`` and a pure ``decide(snapshot, inputs, state) -> (plan, state)``. The controller (and
the evaluation harness) hold the state and pass it back; nothing else is remembered anywhere. The
default policy lives in :mod:`.default`; :mod:`.reference` wraps the published algorithms of
:mod:`.mom` (oVirt MOM) and :mod:`.proxmox` (Proxmox VE) and no ballooning at all (``static``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from autoballoon.errors import InvalidValueError
from autoballoon.model import HostSnapshot, Plan
from autoballoon.policy.default import GuestRecord, PolicyState, decide, host_reserve
from autoballoon.policy.inputs import Inputs
from autoballoon.tunables import Tunables


class Policy(Protocol):
    """What the controller and the evaluation harness drive."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float:
        """Seconds between two decisions this policy was designed for."""
        ...

    @property
    def tunables(self) -> Tunables:
        """The daemon's tunables: the safety gate holds every policy's plan to their floor and limits."""
        ...

    def initial_state(self) -> Any: ...

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: Any) -> tuple[Plan, Any]: ...


@dataclass(frozen=True, slots=True)
class DefaultPolicy:
    """The project's own policy (:func:`autoballoon.policy.default.decide`)."""

    tunables: Tunables
    name: str = "autoballoon"

    @property
    def interval_s(self) -> float:
        return self.tunables.interval_s

    def initial_state(self) -> PolicyState:
        return PolicyState()

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: PolicyState) -> tuple[Plan, PolicyState]:
        return decide(snapshot, inputs, state, self.tunables)


#: The policies the daemon can run, the default first.
POLICY_NAMES: tuple[str, ...] = ("autoballoon", "mom", "proxmox", "static")


def create_policy(name: str, tunables: Tunables) -> Policy:
    """The policy called ``name``; an unknown name is refused with the list of known ones."""
    from autoballoon.policy.reference import MomPolicy, ProxmoxPolicy, StaticPolicy

    if name == "autoballoon":
        return DefaultPolicy(tunables)
    if name == "mom":
        return MomPolicy(tunables)
    if name == "proxmox":
        return ProxmoxPolicy(tunables)
    if name == "static":
        return StaticPolicy(tunables)
    raise InvalidValueError("policy", name, "one of " + ", ".join(POLICY_NAMES))


__all__ = [
    "POLICY_NAMES",
    "DefaultPolicy",
    "GuestRecord",
    "Inputs",
    "Policy",
    "PolicyState",
    "create_policy",
    "decide",
    "host_reserve",
]
