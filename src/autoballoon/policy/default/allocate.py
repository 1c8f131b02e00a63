"""Phase 3, allocate: share the host's budget between the managed VMs and move their targets.

Every guest gets its want when the wants fit; when they do not, the cushions are cut (a water-fill by
shares, the largest first) before anyone drops below its need, and every need before anyone drops below
its OOM floor. Targets then move toward those goals: growth at once, paid from memory that is free now;
shrinking gradually, with a dead band, never while the guest is under pressure (unless the host itself
is in danger) and one step per fresh stats report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from autoballoon.model import HostSnapshot, Status
from autoballoon.policy.default.arrays import I64, align_down
from autoballoon.policy.default.classify import Verdict
from autoballoon.policy.default.columns import Columns
from autoballoon.policy.default.estimate import Estimates
from autoballoon.policy.default.tiers import tiers
from autoballoon.policy.fill import fit_tiers, water_fill
from autoballoon.tunables import Tunables


@dataclass(frozen=True, slots=True)
class Budget:
    """The host's memory as the allocation sees it."""

    reserve: int  # kept for the host itself
    min_free: int  # the part of the reserve not even an OOM floor may take
    host: int  # what the VMs could hold together now: MemAvailable + what they hold - reserve
    budget: int  # the same, or a configured budget if that is smaller
    held: int  # what the VMs that are not managed hold (or are going to)
    danger: bool  # the host is below its reserve now: cushions and pressure no longer protect a guest


def host_reserve(snapshot: HostSnapshot, t: Tunables) -> int:
    """Memory the host keeps for itself: the configured reserve, or a share of its RAM."""
    if t.host_reserve_bytes is not None:
        return t.host_reserve_bytes
    return max(t.reserve_bytes, int(snapshot.mem_total * t.reserve_fraction))


def host_min_free(snapshot: HostSnapshot, reserve: int, t: Tunables) -> int:
    """The host's hard minimum: the part of its reserve not even an OOM floor may take (see
    :attr:`Tunables.host_min_free_margin_bytes`). Its kernel's watermarks plus a margin where they are
    known, a share of its RAM where not; never more than the reserve."""
    if snapshot.watermark_bytes is not None:
        hard = snapshot.watermark_bytes + t.host_min_free_margin_bytes
    else:
        hard = max(t.host_min_free_bytes, int(snapshot.mem_total * t.host_min_free_fraction))
    return min(reserve, hard)


def holding(v: Verdict) -> int:
    """What a VM that is not managed holds in the budget, now and at the end of this decision (where
    its held move takes its target: a quarantine's ceiling, a followed balloon, a floor)."""
    g = v.guest
    actual = g.actual_bytes if g.actual_bytes is not None else g.target_bytes
    return max(v.held_move[0] if v.held_move is not None else g.target_bytes, actual)


def host_budget(
    snapshot: HostSnapshot, others: Sequence[Verdict], managed: Sequence[Verdict], t: Tunables
) -> Budget:
    reserve = host_reserve(snapshot, t)
    counted = [*managed, *(v for v in others if v.status != Status.EXCLUDED)]
    holds = sum(
        v.guest.actual_bytes if v.guest.actual_bytes is not None else v.guest.target_bytes for v in counted
    )
    host = snapshot.mem_available + holds - reserve
    configured = t.host_budget_bytes
    return Budget(
        reserve=reserve,
        min_free=host_min_free(snapshot, reserve, t),
        host=host,
        budget=host if configured is None else min(host, configured),
        held=sum(holding(v) for v in others if v.status != Status.EXCLUDED),
        danger=snapshot.mem_available < reserve,
    )


def goals(c: Columns, pool: int, hard_pool: int, room: int) -> tuple[I64, int, bool]:
    """Where each managed VM should end, the pool that takes, and whether even the OOM floors did not fit.

    The highest tier that fits the pool, topped up toward the next by shares (:func:`fit_tiers`): wants,
    then needs, then OOM floors. The wants also leave ``room`` free for a burst of a guest with
    autodeflate, which takes that memory from the host by itself; needs come before that room. A
    process killed in a guest is a worse harm than a host below its reserve or above a configured
    budget, so when only the OOM floors fit, and only in all the memory the host really has
    (``hard_pool``), that is where they go.
    When not even that fits, the host itself is out of memory: the floors come first and the shares
    water-fill all it has up to the OOM floors. Someone will swap or lose a process, and the operator
    hears of it; the host does not lose whole VMs.
    """
    oom_floor, need, want = c.oom_floor.tolist(), c.need.tolist(), c.want.tolist()
    fitted = fit_tiers([need, want], pool - room, c.shares) or fit_tiers([oom_floor, need], pool, c.shares)
    if fitted is not None:
        return np.array(fitted, dtype=np.int64), pool, False
    if int(c.oom_floor.sum()) <= hard_pool:
        return c.oom_floor.copy(), max(pool, int(c.oom_floor.sum())), True
    # The host itself is out of memory: the floors come first and the shares water-fill all it has up
    # to the OOM floors. Someone will lose a process; the host must not lose whole VMs.
    floors = c.floor.tolist()
    shared = water_fill(floors, oom_floor, c.shares, hard_pool - sum(floors))
    return np.array(shared, dtype=np.int64), hard_pool, True


def step_targets(c: Columns, goal: I64, danger: bool, t: Tunables) -> I64:
    """Each target moved toward its goal: growth at once; shrinking by at most its step, never within its
    dead band, never while the guest is under pressure or may not shrink (see
    :func:`.estimate.shrink_allowance`) — unless the host is in danger, when targets go straight to
    their goals."""
    target = c.target
    grown = np.where((goal - target >= t.grow_min_step_bytes) | (target < c.floor), goal, target)
    if danger:
        shrunk = goal
    else:
        held = c.pressure | ~c.may_shrink | (target - goal < c.dead_band)
        # A shrink toward the guest's want goes into its page cache step by step (see :mod:`.refault`);
        # one the host's budget forces is not slowed for its applications' speed.
        step = np.where(goal >= c.want, c.cache_step, c.step)
        stepped = align_down(target - step, t.target_align_bytes)
        shrunk = np.where(held, target, np.maximum(goal, stepped))
    shrunk = np.where(target > c.ceiling, c.ceiling, shrunk)
    moved = np.where(goal >= target, grown, shrunk)
    return np.minimum(np.maximum(moved, c.floor), c.ceiling)


def pay_growth(c: Columns, alloc: I64, pool: int, hard_pool: int) -> I64:
    """Growth is paid only from memory that is free now (Xen squeezed's two-phase rule).

    A shrinking balloon gives its memory back over seconds, so until it has, the host holds
    ``max(actual, target)`` of every VM. If the growth does not fit beside that in ``pool`` (what is free
    above the host's reserve), the growth beyond what is already granted waits for the freed memory, in
    this order: first every guest up to its OOM floor, from all the memory the host has (``hard_pool``,
    its reserve too: a process killed in a guest is a worse harm than a host below its reserve); then
    urgent guests (under pressure, deflating themselves) the rest of their growth; then the others, by
    shares.
    """
    if int(np.maximum(c.actual, alloc).sum()) <= pool:
        return alloc
    growing = alloc > c.actual
    base = np.where(growing, np.maximum(c.actual, np.minimum(c.target, alloc)), np.maximum(alloc, c.actual))
    base = np.where(growing & (c.target < c.floor), np.maximum(base, np.minimum(c.floor, alloc)), base)
    lo = base.tolist()
    to_oom_floor = np.where(growing, np.maximum(base, np.minimum(alloc, c.oom_floor)), base).tolist()
    safe = water_fill(lo, to_oom_floor, c.shares, hard_pool - sum(lo))
    urgent = np.where(growing & c.urgent, alloc, safe).tolist()
    first = water_fill(safe, np.maximum(urgent, safe).tolist(), c.shares, pool - sum(safe))
    rest = water_fill(first, np.maximum(alloc, first).tolist(), c.shares, pool - sum(first))
    return np.where(growing, np.array(rest, dtype=np.int64), alloc)


class Allocation(NamedTuple):
    targets: I64  # the targets to set this tick
    goals: I64  # where they are headed
    wants: I64  # what each should have (see :func:`tiers`)
    oom_floors: I64  # below which each is OOM-killed
    needs: I64  # below which each is under pressure
    short: bool  # the wants did not fit
    danger: bool  # the host is in danger, or only hurting a guest under pressure held the budget
    reserve_spent: int  # bytes of the host's reserve the targets take (see :func:`reserve_spent`)
    at_oom_floor: int  # managed VMs whose targets are at their OOM floors or below


def reserve_spent(targets: I64, b: Budget) -> int:
    """How far the targets take the host below its reserve: what the VMs are given beyond what they
    could hold together beside it (``b.host``). Only the OOM floors may take it, and never past the hard
    minimum (:attr:`Budget.min_free`); a plan shows it so that the operator hears of it."""
    return max(0, int(targets.sum()) + b.held - b.host)


def allocate(estimates: Estimates, b: Budget, t: Tunables) -> Allocation:
    """The targets to set this tick, and where they are headed."""
    danger = b.danger
    if not estimates.verdicts:
        empty = np.zeros(0, dtype=np.int64)
        return Allocation(empty, empty, empty, empty, empty, False, danger, reserve_spent(empty, b), 0)
    c = estimates.columns
    oom_floor, need, want = tiers(c, t)
    if c.anticipated.size:  # a burst its profile expects soon: a want, the first thing a short host cuts
        want = np.maximum(want, c.anticipated)  # at most its ceiling already
    c = c._replace(oom_floor=oom_floor, need=need, want=want)
    # Room for the largest burst a guest with autodeflate has shown: it would take it from the host.
    bursts = c.jump[estimates.autodeflate & ~c.blind]
    room = int(bursts.max()) if bursts.size else 0
    hard_pool = b.host - b.held + b.reserve - b.min_free
    goal, pool, short = goals(c, b.budget - b.held, hard_pool, room)
    short = short or int(c.want.sum()) > pool
    alloc = step_targets(c, goal, b.danger, t)
    if int(alloc.sum()) > pool:
        # Growth lands at once, shrinks step by step: to stay within the budget meanwhile, the guests
        # still above their goals shrink faster, the largest surplus first (never one under pressure,
        # unless the host is in danger; being above the budget is a worse harm than a fast shrink).
        lo = np.where(c.pressure & (not danger), alloc, np.minimum(goal, alloc))
        if int(lo.sum()) > pool:  # only cutting a guest under pressure holds the budget: cut it too
            lo = np.minimum(goal, alloc)
            danger = True
        cut = water_fill(lo.tolist(), alloc.tolist(), [1.0] * len(estimates.verdicts), pool - int(lo.sum()))
        alloc = np.array(cut, dtype=np.int64)
    # The configured budget caps the goals; what growth can be paid from is what the host really has
    # (its reserve too, when only that keeps guests at their OOM floors).
    alloc = pay_growth(c, alloc, max(b.host - b.held, pool), hard_pool)
    alloc = np.minimum(np.maximum(align_down(alloc, t.target_align_bytes), c.floor), c.ceiling)
    alloc = _whole_blocks(alloc, estimates.verdicts)
    alloc = np.where(c.blind, np.maximum(alloc, c.target), alloc)  # never shrunk without fresh stats
    spent, at_floor = reserve_spent(alloc, b), int((alloc <= c.oom_floor).sum())
    return Allocation(alloc, goal, c.want, c.oom_floor, c.need, short, danger, spent, at_floor)


def _whole_blocks(alloc: I64, verdicts: Sequence[Verdict]) -> I64:
    """A virtio-mem guest is resized in whole blocks on top of its boot memory, and the backends round
    a target up to the next block (:meth:`VirtioMem.requested_for`): its target is set to what it will
    really have, so that the plan, the budget and the progress checks agree with the device."""
    out = alloc
    for i, v in enumerate(verdicts):
        vmem = v.guest.virtio_mem
        if vmem is not None:
            if out is alloc:
                out = alloc.copy()
            whole = vmem.boot_bytes + vmem.requested_for(int(alloc[i]))
            out[i] = min(whole, v.ceiling)
    return out
