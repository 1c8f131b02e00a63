"""Operator actions, validated before anything is touched.

The CLI and the HTTP API both come through here, so a request is refused the same way whichever door it
uses: every check runs against a fresh :class:`GuestSnapshot` first, and only a request that passes all of
them reaches the backend. A refusal is a :class:`~autoballoon.errors.RefusedError` (exit 2 / HTTP 4xx) whose
message names the value and the limit; nothing has changed when it is raised.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, TypedDict, Unpack

from autoballoon import safety
from autoballoon.backends.base import Backend
from autoballoon.errors import InvalidValueError, LimitError
from autoballoon.model import (
    BalloonChange,
    ChangeResult,
    GuestPolicy,
    GuestSnapshot,
    check_policy,
)
from autoballoon.tunables import DEFAULT_TUNABLES, Tunables
from autoballoon.units import format_size

Scope = Literal["live", "config", "both"]


def floor_of(guest: GuestSnapshot, tunables: Tunables = DEFAULT_TUNABLES) -> int:
    """The lowest target this guest may be given by hand: the daemon's own floor for it
    (:func:`safety.limits`), so that the CLI, the API and the controller refuse the same sizes."""
    return safety.limits(guest, guest.policy, tunables)[0]


def resolve_scope(guest: GuestSnapshot, live: bool, config: bool) -> Scope:
    """virsh semantics: neither flag means "current" (live if running, else the persistent config)."""
    if live and not guest.state.active:
        raise LimitError(guest.name, "--live change", "on a VM that is not running", "start it first")
    if config and not guest.persistent:
        raise LimitError(guest.name, "--config change", "on a transient VM", "it has no persistent config")
    if live and config:
        return "both"
    if live:
        return "live"
    if config:
        return "config"
    return "live" if guest.state.active else "config"


def setmem(
    backend: Backend, vm: str, size: int, *, live: bool = False, config: bool = False, force: bool = False
) -> Scope:
    guest = backend.guest(vm)
    scope = resolve_scope(guest, live, config)
    # The one check of a hand target (the API's and the controller's too); a config-only change sets no
    # live target, so what the guest uses now does not bound it.
    safety.check_target(guest, guest.policy, DEFAULT_TUNABLES, size, force=force or scope == "config")
    backend.set_target(vm, size, live=scope in ("live", "both"), config=scope in ("config", "both"))
    return scope


def setmaxmem(backend: Backend, vm: str, size: int) -> ChangeResult:
    """``<memory>`` is fixed at boot, so only the persistent config can change; it applies at next boot."""
    guest = backend.guest(vm)
    if not guest.persistent:
        raise LimitError(vm, "maximum memory", format_size(size), "a transient VM has no persistent config")
    floor = floor_of(guest)
    if size < floor:
        raise LimitError(vm, "maximum memory", format_size(size), f"below the floor {format_size(floor)}")
    return backend.set_max(vm, size)


def setvcpus(
    backend: Backend,
    vm: str,
    count: int,
    *,
    live: bool = False,
    config: bool = False,
) -> ChangeResult:
    guest = backend.guest(vm)
    if count < 1:
        raise InvalidValueError("vCPU count", count, "a whole number of at least 1")
    if count > guest.max_vcpus:
        raise LimitError(vm, "vCPU count", str(count), f"above the VM's maximum of {guest.max_vcpus} vCPUs")
    scope = resolve_scope(guest, live, config)
    return backend.set_vcpus(vm, count, live=scope in ("live", "both"), config=scope in ("config", "both"))


def set_balloon(backend: Backend, vm: str, change: BalloonChange) -> ChangeResult:
    if change.empty:
        raise InvalidValueError(
            "balloon change",
            "nothing",
            "at least one of --model, --autodeflate, --free-page-reporting, --stats-period",
        )
    guest = backend.guest(vm)
    if not guest.persistent:
        raise LimitError(vm, "balloon change", "", "a transient VM has no persistent config to edit")
    if change.model == "none" and (change.autodeflate or change.free_page_reporting or change.stats_period):
        raise InvalidValueError(
            "balloon change", "--model none with other balloon settings", "--model none on its own"
        )
    return backend.set_balloon(vm, change)


def validate_policy(guest: GuestSnapshot, policy: GuestPolicy) -> None:
    """A per-VM policy must be consistent with the VM it is for (each field's range is its type's)."""
    check_policy(policy, guest.name, guest.max_bytes)


class PolicyChanges(TypedDict, total=False):
    """The :class:`GuestPolicy` fields a caller changes; a key left out keeps its stored value."""

    min_bytes: int | None
    max_bytes: int | None
    shares: int | None
    buffer: float | None
    exclude: bool


def update_policy(backend: Backend, vm: str, **changes: Unpack[PolicyChanges]) -> GuestPolicy:
    """Merge ``changes`` (only the keys given) into the VM's stored policy, validate, then store it. A
    value outside its field's range is refused under the field's name (a
    :class:`~autoballoon.constraints.ConstraintError`, from :class:`GuestPolicy` itself)."""
    guest = backend.guest(vm)
    policy = replace(backend.get_policy(vm), **changes)
    validate_policy(guest, policy)
    backend.set_policy(vm, policy)
    return policy
