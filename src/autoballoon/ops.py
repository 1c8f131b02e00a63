"""Operator actions, validated before anything is touched.

The CLI and the HTTP API both come through here, so a request is refused the same way whichever door it
uses: every check runs against a fresh :class:`GuestSnapshot` first, and only a request that passes all of
them reaches the backend. A refusal is a :class:`~autoballoon.errors.RefusedError` (exit 2 / HTTP 4xx) whose
message names the value and the limit; nothing has changed when it is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autoballoon.backends.base import Backend
from autoballoon.errors import InvalidValueError, LimitError
from autoballoon.model import (
    BALLOON_MODELS,
    MAX_BUFFER,
    BalloonChange,
    ChangeResult,
    GuestPolicy,
    GuestSnapshot,
)
from autoballoon.units import MiB, format_size


@dataclass(frozen=True, slots=True)
class OperatorLimits:
    """Hard limits on what an operator may ask for, whoever asks."""

    #: No guest is ever ballooned below this: a Linux guest under 64 MiB stops being useful or crashes.
    min_guest_bytes: int = 64 * MiB
    max_shares: int = 1_000_000
    #: The largest per-VM buffer, as a fraction of demand (10 = 1000 %): more is surely a typo.
    max_buffer: float = MAX_BUFFER
    max_stats_period_s: int = 86_400


LIMITS = OperatorLimits()

Scope = Literal["live", "config", "both"]


def floor_of(guest: GuestSnapshot, limits: OperatorLimits = LIMITS) -> int:
    """The lowest target this guest may be given: its policy minimum, never below the global minimum."""
    return max(limits.min_guest_bytes, guest.policy.min_bytes or 0)


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


def check_target(guest: GuestSnapshot, size: int, limits: OperatorLimits = LIMITS) -> None:
    """A balloon target must lie between the guest's floor and its ``<memory>``."""
    if size > guest.max_bytes:
        raise LimitError(
            guest.name,
            "target",
            format_size(size),
            f"above the VM's maximum <memory> {format_size(guest.max_bytes)}",
        )
    floor = floor_of(guest, limits)
    if size < floor:
        source = (
            "its policy minimum"
            if (guest.policy.min_bytes or 0) > limits.min_guest_bytes
            else ("the smallest target autoballoon allows")
        )
        raise LimitError(guest.name, "target", format_size(size), f"below {source} {format_size(floor)}")


def setmem(backend: Backend, vm: str, size: int, *, live: bool = False, config: bool = False) -> Scope:
    guest = backend.guest(vm)
    scope = resolve_scope(guest, live, config)
    check_target(guest, size)
    backend.set_target(vm, size, live=scope in ("live", "both"), config=scope in ("config", "both"))
    return scope


def setmaxmem(backend: Backend, vm: str, size: int, limits: OperatorLimits = LIMITS) -> ChangeResult:
    """``<memory>`` is fixed at boot, so only the persistent config can change; it applies at next boot."""
    guest = backend.guest(vm)
    if not guest.persistent:
        raise LimitError(vm, "maximum memory", format_size(size), "a transient VM has no persistent config")
    floor = floor_of(guest, limits)
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


def set_balloon(
    backend: Backend, vm: str, change: BalloonChange, limits: OperatorLimits = LIMITS
) -> ChangeResult:
    if change.empty:
        raise InvalidValueError(
            "balloon change",
            "nothing",
            "at least one of --model, --autodeflate, --free-page-reporting, --stats-period",
        )
    if change.model is not None and change.model not in BALLOON_MODELS:
        raise InvalidValueError("balloon model", change.model, "one of " + ", ".join(BALLOON_MODELS))
    if change.stats_period is not None and not (0 <= change.stats_period <= limits.max_stats_period_s):
        raise InvalidValueError(
            "stats period", change.stats_period, f"whole seconds from 0 (off) to {limits.max_stats_period_s}"
        )
    guest = backend.guest(vm)
    if not guest.persistent:
        raise LimitError(vm, "balloon change", "", "a transient VM has no persistent config to edit")
    if change.model == "none" and (change.autodeflate or change.free_page_reporting or change.stats_period):
        raise InvalidValueError(
            "balloon change", "--model none with other balloon settings", "--model none on its own"
        )
    return backend.set_balloon(vm, change)


def validate_policy(guest: GuestSnapshot, policy: GuestPolicy, limits: OperatorLimits = LIMITS) -> None:
    """A per-VM policy must be consistent with the VM it is for."""
    for what, value in (("policy minimum", policy.min_bytes), ("policy maximum", policy.max_bytes)):
        if value is None:
            continue
        if value < limits.min_guest_bytes:
            limit = f"below the smallest target allowed, {format_size(limits.min_guest_bytes)}"
            raise LimitError(guest.name, what, format_size(value), limit)
        if value > guest.max_bytes:
            limit = f"above the VM's <memory> {format_size(guest.max_bytes)}"
            raise LimitError(guest.name, what, format_size(value), limit)
    if policy.min_bytes is not None and policy.max_bytes is not None and policy.min_bytes > policy.max_bytes:
        raise LimitError(
            guest.name,
            "policy minimum",
            format_size(policy.min_bytes),
            f"above the policy maximum {format_size(policy.max_bytes)}",
        )
    if policy.shares is not None and not (1 <= policy.shares <= limits.max_shares):
        raise InvalidValueError("shares", policy.shares, f"a whole number from 1 to {limits.max_shares}")
    if policy.buffer is not None and not (0.0 <= policy.buffer <= limits.max_buffer):
        raise InvalidValueError(
            "buffer", policy.buffer, f"a percentage from 0 to {limits.max_buffer * 100:g}"
        )


def update_policy(backend: Backend, vm: str, **changes: object) -> GuestPolicy:
    """Merge ``changes`` (only the keys given) into the VM's stored policy, validate, then store it."""
    guest = backend.guest(vm)
    current = backend.get_policy(vm)
    fields = current.to_json()
    unknown = set(changes) - set(fields)
    if unknown:
        raise InvalidValueError("policy field", sorted(unknown)[0], "one of " + ", ".join(fields))
    fields.update(changes)
    policy = GuestPolicy(**fields)  # type: ignore[arg-type]
    validate_policy(guest, policy)
    backend.set_policy(vm, policy)
    return policy
