"""What a decision reads besides the snapshot and its own memory, and each VM's effective policy.

Both the policies and the safety gate (:mod:`.tick`) read a VM's policy through :func:`effective_policy`,
so that the floor a policy plans with is the floor the gate enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from autoballoon import safety
from autoballoon.health import DEFAULT_HEALTH, HealthState, HealthTunables
from autoballoon.model import GuestPolicy, GuestSnapshot


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a decision reads besides the snapshot and its own memory."""

    #: Each VM's effective policy (config, metadata and run-time overrides layered); a VM missing here
    #: uses the policy its snapshot carries.
    policies: Mapping[str, GuestPolicy] = field(default_factory=dict)
    #: The health guard's verdicts: quarantines, a host-wide shrink pause, CPU baselines.
    health: HealthState = field(default_factory=HealthState)
    health_tunables: HealthTunables = DEFAULT_HEALTH
    #: Guest OS types named by the operator, overriding what the backend detected.
    os_types: Mapping[str, str] = field(default_factory=dict)


def effective_policy(g: GuestSnapshot, inputs: Inputs) -> GuestPolicy:
    """The VM's policy as every rule sees it: the layered one (config, metadata, run-time), or the
    snapshot's, with the health guard's floor for a Windows guest (see :func:`safety.os_floor`)."""
    policy = inputs.policies.get(g.name) or g.policy
    guard = inputs.health_tunables
    os_type = inputs.os_types.get(g.name, g.os_type)
    if not guard.enabled or os_type != "windows":
        return policy
    return safety.os_floor(policy, os_type, g.max_bytes, min_bytes=guard.windows_min_bytes,
                           min_fraction=guard.windows_min_fraction)  # fmt: skip
