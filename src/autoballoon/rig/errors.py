"""The one exception the rig raises: the real-VM stack could not be set up (the reason is the message)."""

from __future__ import annotations

from autoballoon.errors import AutoballoonError


class RigError(AutoballoonError):
    """libvirtd, QEMU, the guest image or a guest could not be brought up; the message says why."""
