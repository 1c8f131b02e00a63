"""Proxmox VE's auto-balloon (``PVE::AutoBalloon::compute_alg1``), re-implemented from its description.

pvestatd runs it every 10 s without any memory between runs: the host's goal is to bring used memory to
80 % of RAM; the difference is shared out by a water-fill on shares over ``[balloon_min, maxmem]``, first
among the guests that most need (or can best spare) memory, then among all; and no balloon moves by more
than 100 MiB per cycle. It reads the guest's MemFree (not MemAvailable), so page cache counts as used.

Mappings onto a snapshot: ``balloon`` is the balloon's ``actual``; ``balloon_min`` is the per-VM policy
``min`` (a VM without one is skipped, as Proxmox skips VMs without a configured minimum); ``shares`` is
the per-VM policy ``shares`` (default 1000, 0 = not auto-ballooned).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autoballoon.model import GuestSnapshot, HostSnapshot
from autoballoon.units import MiB


@dataclass(frozen=True, slots=True)
class ProxmoxTunables:
    """The published defaults."""

    interval_s: float = 10.0
    #: Host target: used memory at this percentage of RAM.
    target_percent: float = 80.0
    #: No action while the goal is within this many bytes of zero.
    dead_band_bytes: int = 10 * MiB
    #: The most a balloon moves in one cycle.
    max_change_bytes: int = 100 * MiB
    default_shares: int = 1000
    #: A guest has "enough free" memory when MemFree exceeds this share of its balloon_min.
    enough_free_fraction: float = 0.25
    #: Rounds of the water-fill (each round fixes the VMs clamped at a bound and re-shares the rest).
    fill_rounds: int = 16


DEFAULT_PROXMOX = ProxmoxTunables()


@dataclass(frozen=True, slots=True)
class Vm:
    """What compute_alg1 knows of one VM."""

    name: str
    balloon: int
    balloon_min: int
    maxmem: int
    freemem: int | None
    shares: int


def host_goal(snap: HostSnapshot, tun: ProxmoxTunables = DEFAULT_PROXMOX) -> int:
    """Bytes the host can give (> 0) or wants back (< 0): ``MemTotal * target - used``."""
    used = snap.mem_total - snap.mem_available
    return int(snap.mem_total * tun.target_percent / 100.0) - used


def candidates(snap: HostSnapshot, tun: ProxmoxTunables = DEFAULT_PROXMOX) -> list[Vm]:
    """The VMs compute_alg1 works on: a running balloon driver, a configured minimum, shares above 0."""
    out: list[Vm] = []
    for g in snap.guests:
        vm = _as_vm(g, tun)
        if vm is not None:
            out.append(vm)
    return out


def _as_vm(g: GuestSnapshot, tun: ProxmoxTunables) -> Vm | None:
    if not g.state.active or not g.balloon.enabled or g.policy.exclude:
        return None
    if not g.actual_bytes or not g.policy.min_bytes:
        return None
    shares = g.policy.shares if g.policy.shares is not None else tun.default_shares
    if shares == 0:
        return None
    return Vm(
        name=g.name,
        balloon=g.actual_bytes,
        balloon_min=min(g.policy.min_bytes, g.max_bytes),
        maxmem=g.max_bytes,
        freemem=g.stats.free,
        shares=shares,
    )


def enough_free(vm: Vm, tun: ProxmoxTunables = DEFAULT_PROXMOX) -> bool:
    return (
        vm.freemem is not None
        and vm.freemem > tun.enough_free_fraction * vm.balloon_min
        and vm.balloon >= vm.balloon_min
    )


def water_fill(vms: Sequence[Vm], goal: int, rounds: int) -> dict[str, int]:
    """Desired sizes: ``balloon_min + alloc * shares / sum(shares)`` clamped to ``[min, max]``.

    ``alloc`` is what the group holds above its minimums plus the goal. A VM clamped at a bound keeps
    that bound and the rest is shared again among the others, until no VM newly hits a bound.
    """
    alloc = sum(v.balloon - v.balloon_min for v in vms) + goal
    fixed: dict[str, int] = {}
    free = list(vms)
    for _ in range(rounds):
        if not free:
            break
        share_total = sum(v.shares for v in free)
        left = alloc - sum(fixed[n] - m for n, m in ((v.name, v.balloon_min) for v in vms if v.name in fixed))
        clamped = False
        still: list[Vm] = []
        for v in free:
            desired = v.balloon_min + int(left * v.shares / share_total)
            if desired > v.maxmem:
                fixed[v.name] = v.maxmem
                clamped = True
            elif desired < v.balloon_min:
                fixed[v.name] = v.balloon_min
                clamped = True
            else:
                still.append(v)
        free = still
        if not clamped:
            break
    out = dict(fixed)
    if free:
        share_total = sum(v.shares for v in free)
        left = alloc - sum(fixed[v.name] - v.balloon_min for v in vms if v.name in fixed)
        for v in free:
            out[v.name] = min(
                max(v.balloon_min + int(left * v.shares / share_total), v.balloon_min), v.maxmem
            )
    return out


def _moved(vms: Sequence[Vm], desired: dict[str, int]) -> int:
    return sum(desired[v.name] - v.balloon for v in vms)


def compute(vms: Sequence[Vm], goal: int, tun: ProxmoxTunables = DEFAULT_PROXMOX) -> dict[str, int]:
    """compute_alg1: new balloon sizes by VM name (only those that change), each within ±100 MiB."""
    if abs(goal) <= tun.dead_band_bytes or not vms:
        return {}
    rich = [v for v in vms if enough_free(v, tun)]
    short = [v for v in vms if not enough_free(v, tun)]
    first = short if goal > 0 else rich  # give to the needy first; take from those with free memory first
    desired: dict[str, int] = {}
    if first:
        desired = water_fill(first, goal, tun.fill_rounds)
    moved = _moved(first, desired) if first else 0
    slack = tun.dead_band_bytes  # integer rounding in the fill never counts as "not absorbed"
    if not first or (goal > 0 and moved < goal - slack) or (goal < 0 and moved > goal + slack):
        desired = water_fill(vms, goal, tun.fill_rounds)  # the first group could not absorb it: all
    by_name = {v.name: v for v in vms}
    out: dict[str, int] = {}
    for name, want in desired.items():
        cur = by_name[name].balloon
        new = min(max(want, cur - tun.max_change_bytes), cur + tun.max_change_bytes)
        if new != cur:
            out[name] = new
    return out


def decide(snap: HostSnapshot, tun: ProxmoxTunables = DEFAULT_PROXMOX) -> dict[str, int]:
    """One pvestatd cycle on a snapshot: new targets by VM name (only those that differ from the target)."""
    plan = compute(candidates(snap, tun), host_goal(snap, tun), tun)
    targets = {g.name: g.target_bytes for g in snap.guests}
    return {n: t for n, t in plan.items() if targets.get(n) != t}
