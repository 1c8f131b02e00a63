"""The safety rules: what no policy may break, as small pure functions.

The policy decides what a guest *should* get; these functions decide whether it may be touched at all
(excluded, stale stats, stuck balloon, a manual change to honour, quarantine) and clamp every target into
``[floor, ceiling]``. They are separate from the policy so that any policy (the default one, a reference
policy in the evaluation harness, a future one) can be held to the same rules, and so that each rule is
testable on its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from autoballoon.errors import LimitError
from autoballoon.model import GuestPolicy, GuestSnapshot, VMState
from autoballoon.tunables import Tunables
from autoballoon.units import format_size, human

#: States in which QEMU runs and the guest can answer a balloon request.
_RUNNING = (VMState.RUNNING, VMState.BLOCKED)
#: States in which QEMU runs at all (``VMState.active``), as a tuple: the property and an Enum class
#: attribute cost a few hundred ns, and these checks run for every VM on every tick.
_ACTIVE = tuple(s for s in VMState if s.active)


def limits(guest: GuestSnapshot, policy: GuestPolicy, tunables: Tunables) -> tuple[int, int]:
    """``(floor, ceiling)`` for a VM's target.

    The ceiling is ``<memory>`` (or a lower per-VM max); the floor is the per-VM min but never under the
    global minimum, and never above the ceiling (a VM whose ``<memory>`` is below the global minimum is
    simply never shrunk). A guest with virtio-mem is resized by unplugging blocks on top of its boot
    memory, never ballooned below it: its boot memory is its floor too.
    """
    ceiling = guest.max_bytes
    if policy.max_bytes is not None and policy.max_bytes < ceiling:
        ceiling = policy.max_bytes
    floor = tunables.global_min_bytes
    if policy.min_bytes is not None and policy.min_bytes > floor:
        floor = policy.min_bytes
    if guest.virtio_mem is not None and guest.virtio_mem.boot_bytes > floor:
        floor = guest.virtio_mem.boot_bytes
    return (ceiling if ceiling < floor else floor), ceiling  # min(): a builtin call costs more


def check_target(
    guest: GuestSnapshot, policy: GuestPolicy, tunables: Tunables, size: int, *, force: bool = False
) -> None:
    """The one check of a target set by hand, whichever door it comes through (``setmem``, the API, the
    controller's queue): it must lie within :func:`limits`, the same bounds the daemon keeps its own
    targets in, so that a hand target is never one the daemon would refuse to set or would pull back at
    once. The :class:`~autoballoon.errors.LimitError` names the bound that refused it.

    A live target below what the guest uses now takes memory its processes hold: it swaps, or its OOM
    killer ends one. That is refused too, unless the operator says ``force`` (``setmem ci 200M`` was
    accepted while the guest used 658 MiB)."""
    floor, ceiling = limits(guest, policy, tunables)
    if size > ceiling:
        above = "the VM's maximum <memory>" if ceiling == guest.max_bytes else "its policy maximum"
        raise LimitError(guest.name, "target", format_size(size), f"above {above} {format_size(ceiling)}")
    if size < floor:
        if guest.virtio_mem is not None and floor == guest.virtio_mem.boot_bytes:
            below = "its virtio-mem boot memory"
        elif policy.min_bytes is not None and floor == policy.min_bytes:
            below = "its policy minimum"
        else:
            below = "the smallest target autoballoon allows"
        raise LimitError(guest.name, "target", format_size(size), f"below {below} {format_size(floor)}")
    used = guest.used_bytes
    if not force and used is not None and guest.state in _ACTIVE and size < used:
        raise LimitError(
            guest.name,
            "target",
            format_size(size),
            f"below what the guest uses now ({human(used)}): it would swap or lose a process to its "
            'OOM killer; force it (setmem --force, "force": true in the API) to set it anyway',
        )


def os_floor(
    policy: GuestPolicy, os_type: str, max_bytes: int, *, min_bytes: int, min_fraction: float
) -> GuestPolicy:
    """``policy`` with its floor raised for a Windows guest: never below ``min_bytes`` nor
    ``min_fraction`` of its max (but never above the max).

    Windows reports "available" with its standby cache in it and pages hard when squeezed, and its
    balloon service reports MemTotal as the full size (virtio-win#568), so its stats overstate what it
    can give up; a fixed safe margin is the honest answer. Other guests are returned unchanged.
    """
    if os_type != "windows":
        return policy
    floor = min(max(min_bytes, int(max_bytes * min_fraction)), max_bytes)
    if policy.min_bytes is not None and policy.min_bytes >= floor:
        return policy
    return replace(policy, min_bytes=floor)


def clamp(value: int, floor: int, ceiling: int) -> int:
    """``value`` within ``[floor, ceiling]`` (the ceiling wins if they cross).

    Comparisons rather than ``min(max(...))``: the builtins cost twice as much, on every VM every tick.
    """
    if value < floor:
        value = floor
    return ceiling if ceiling < value else value


def exclusion(guest: GuestSnapshot, policy: GuestPolicy) -> str | None:
    """Why a VM is not ballooned at all, or None. Its memory is then outside the budget math."""
    if policy.exclude:
        return "excluded by policy"
    if guest.state not in _ACTIVE:
        return f"not running ({guest.state.value})"
    if not guest.balloon.enabled:
        return "no balloon device (model='none')"
    if guest.incapable is not None:
        return guest.incapable
    return None


def hands_off(guest: GuestSnapshot) -> bool:
    """Whether its balloon must stay exactly where it is: the VM is paused, migrating or shutting down, or
    its host's free memory is unknown. Unlike a guest that only lost its stats, nothing is sent to it,
    not even memory back: a paused workload cannot grow unseen, a balloon moved during a migration
    fights it, and a host whose free memory is unknown has none known to give."""
    return guest.hold is not None or guest.state not in _RUNNING


def hold_reason(guest: GuestSnapshot, wall_time: float, tunables: Tunables) -> str | None:
    """Why a running VM must be held at its target (no fresh stats), or None if it may be managed."""
    if guest.hold is not None:
        return guest.hold
    if guest.state not in _RUNNING:
        return f"VM is {guest.state.value}"
    if guest.actual_bytes is None:
        return "balloon has never reported its size"
    stats = guest.stats
    if stats.total is None or stats.available is None or not stats.last_update:  # not stats.present
        if not guest.balloon.stats_period:
            return "no guest stats (stats period disabled)"
        return "no guest stats (no balloon driver or stats service in the guest?)"
    # guest.stats_age(wall_time), without testing ``present`` again: it implies a last_update.
    age = wall_time - stats.last_update
    age = age if age > 0.0 else 0.0
    if age > tunables.stats_stale_s:
        return f"guest stats are stale ({age:.0f} s old)"
    return None


class Progress(NamedTuple):
    """Where a balloon was when it last made progress toward its target."""

    actual: int  # the balloon's size then
    inflating: bool  # the direction it had to go (True: actual above target)
    since: float  # snapshot time then


def track_progress(
    previous: Progress | None, actual: int | None, target: int, now: float, tunables: Tunables
) -> Progress | None:
    """The new progress mark: None once the balloon has arrived; a new mark when it moved toward its
    target (by more than the tolerance) or when it has to go the other way now.

    A new target in the same direction does not reset the mark: a balloon that ignores one request after
    another is as stuck as one that ignores a single request.
    """
    if actual is None:
        return previous
    tol = tunables.stuck_tolerance_bytes
    if abs(actual - target) <= tol:
        return None
    inflating = actual > target
    if previous is None or previous.inflating != inflating:
        return Progress(actual, inflating, now)
    moved = previous.actual - actual if inflating else actual - previous.actual
    if moved >= tol:
        return Progress(actual, inflating, now)
    return previous


def stuck_wait(times: int, tunables: Tunables) -> float:
    """How long a balloon found stuck ``times`` times in a row is left alone: ``stuck_retry_s``,
    doubling with each time, up to ``stuck_retry_max_s``."""
    wait = tunables.stuck_retry_s * 2.0 ** min(max(times - 1, 0), 32)
    return min(wait, tunables.stuck_retry_max_s)


def followed(actual: int | None, seen_actual: int | None, tunables: Tunables) -> bool:
    """Whether a balloon moved since the last look by more than the stuck tolerance: one that moves is
    not stuck, and its back-off starts afresh."""
    if actual is None or seen_actual is None:
        return False
    return abs(actual - seen_actual) > tunables.stuck_tolerance_bytes


def stuck_for(progress: Progress | None, now: float) -> float:
    """Seconds the balloon has been away from its target without moving toward it."""
    return 0.0 if progress is None else now - progress.since


def is_stuck(progress: Progress | None, now: float, tunables: Tunables) -> bool:
    return stuck_for(progress, now) >= tunables.stuck_after_s


def manual_change(target: int, seen_target: int | None, planned_target: int | None) -> bool:
    """The target moved since the last look, and not to what autoballoon itself set: someone else did it."""
    return seen_target is not None and target != seen_target and target != planned_target


def self_deflated(
    actual: int | None,
    seen_actual: int | None,
    target: int,
    tunables: Tunables,
    *,
    seen_target: int | None,
    autodeflate: bool,
) -> bool:
    """The guest took memory back by itself (autodeflate at OOM time): ``actual`` rose, and above every
    target it may still be heading to, this one and the one of the last look.

    Only a balloon with autodeflate (deflate-on-oom) deflates by itself. A balloon deflating toward a
    grown target never passes it, so this holds when the daemon grew the guest meanwhile (growing a
    guest under pressure each tick as it deflated itself past that growth once hid it, and the target
    never caught up). But a balloon still deflating toward a grow that was cut since keeps rising for a
    while: read as self-deflation (without both conditions), that grew and cut four guests on the rig
    between 128 and 512 MiB every second, and a guest without autodeflate lost a process."""
    if not autodeflate or actual is None or seen_actual is None:
        return False
    tol = tunables.self_deflate_tolerance_bytes
    heading = target if seen_target is None else max(target, seen_target)
    return actual > seen_actual + tol and actual > heading + tol


def safe_target(proposed: int, current: int, floor: int, ceiling: int, *, may_shrink: bool) -> int:
    """The last word on any target: within ``[floor, ceiling]`` and, for a held VM, never below now."""
    value = clamp(proposed, floor, ceiling)
    if not may_shrink and value < current:
        value = min(current, ceiling)
    return value
