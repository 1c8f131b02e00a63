"""Balloon policies: the default one and the published references, behind one small interface.

A policy is an object with a ``name``, the ``interval_s`` it wants to be called at, an
``initial_state()`` and a pure ``decide(snapshot, inputs, state) -> (plan, state)``. The controller (and
the evaluation harness) hold the state and pass it back; nothing else is remembered anywhere. The
default policy lives in :mod:`.default`; :mod:`.reference` wraps the published algorithms of
:mod:`.mom` (oVirt MOM) and :mod:`.proxmox` (Proxmox VE) and no ballooning at all (``static``).

:data:`POLICIES` is the one list of them: ``autoballoon run --policy``, the simulated evaluation (which
adds only its oracle) and the real-guest benches all take their names from it, so a policy registered
here is one the daemon, the evaluation and the benches all know, and none of them can know another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from autoballoon.errors import InvalidValueError
from autoballoon.model import HostSnapshot, Plan
from autoballoon.policy.default import GuestRecord, PolicyState, decide, host_reserve
from autoballoon.policy.inputs import Inputs
from autoballoon.policy.reference import MomPolicy, ProxmoxPolicy, StaticPolicy
from autoballoon.tunables import Tunables


class Policy(Protocol):
    """What the controller drives, and what the evaluation harness drives through the same tick."""

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


#: Every policy the daemon can run, by name, the default first (the order reports show them in): each
#: built from the daemon's tunables alone.
POLICIES: Mapping[str, Callable[[Tunables], Policy]] = MappingProxyType(
    {
        "autoballoon": DefaultPolicy,
        "mom": MomPolicy,
        "proxmox": ProxmoxPolicy,
        "static": StaticPolicy,
    }
)


def unknown_policy(name: str, known: tuple[str, ...] = tuple(POLICIES)) -> InvalidValueError:
    """The error for a policy name nobody registered, listing the ``known`` ones."""
    return InvalidValueError("policy", name, "one of " + ", ".join(known))


def parse_policies(text: str, known: Sequence[str] = tuple(POLICIES)) -> tuple[str, ...]:
    """A command line's ``--policies``: ``all`` (or nothing) for every ``known`` name, else a
    comma-separated subset of them, in the order given and each once; any other name is refused with the
    list of known ones, so that a typo is not a run that silently compares fewer policies."""
    if text.strip() in ("", "all"):
        return tuple(known)
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names or any(n not in known for n in names):
        raise InvalidValueError("--policies", text, "'all' or a comma-separated list of " + ", ".join(known))
    return names


def create_policy(name: str, tunables: Tunables) -> Policy:
    """The policy called ``name``; an unknown name is refused with the list of known ones."""
    build = POLICIES.get(name)
    if build is None:
        raise unknown_policy(name)
    return build(tunables)


__all__ = [
    "POLICIES",
    "DefaultPolicy",
    "GuestRecord",
    "Inputs",
    "Policy",
    "PolicyState",
    "create_policy",
    "decide",
    "host_reserve",
    "parse_policies",
    "unknown_policy",
]
