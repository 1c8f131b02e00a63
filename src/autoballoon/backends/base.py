"""The one interface between autoballoon and a hypervisor.

Everything above this module (policy, controller, CLI, server) talks to a :class:`Backend` and never
learns whether it is libvirt, a raw QMP socket or the built-in simulator. Implementations convert units
at their edge and raise only :mod:`autoballoon.errors` exceptions.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from autoballoon.model import BalloonChange, ChangeResult, GuestPolicy, GuestSnapshot, HostSnapshot


@runtime_checkable
class Backend(Protocol):
    """A connection to one host's VMs."""

    uri: str

    def snapshot(self) -> HostSnapshot:
        """The host and every VM now. One bulk read where the hypervisor allows it."""
        ...

    def guest(self, vm: str) -> GuestSnapshot:
        """One VM now; raises :class:`~autoballoon.errors.UnknownVMError` if it does not exist."""
        ...

    def set_target(self, vm: str, target_bytes: int, *, live: bool = True, config: bool = False) -> None:
        """Move the balloon target (``<currentMemory>``) of a VM, live and/or in its persistent config."""
        ...

    def set_max(self, vm: str, max_bytes: int) -> ChangeResult:
        """Change ``<memory>`` in the persistent config (effective at the next boot)."""
        ...

    def set_vcpus(self, vm: str, count: int, *, live: bool = True, config: bool = False) -> ChangeResult:
        """Change the number of active vCPUs."""
        ...

    def set_balloon(self, vm: str, change: BalloonChange) -> ChangeResult:
        """Edit the persistent ``<memballoon>``; a stats period is also applied live when possible."""
        ...

    def get_policy(self, vm: str) -> GuestPolicy:
        """The per-VM policy stored with the VM (libvirt ``<metadata>``), or an empty one."""
        ...

    def set_policy(self, vm: str, policy: GuestPolicy) -> None:
        """Store the per-VM policy with the VM so that it travels with it."""
        ...

    def close(self) -> None:
        """Release the connection. Never changes a VM."""
        ...
