"""The default balloon policy: a pure function from a host snapshot to a plan.

``decide(snapshot, policies, state, tunables) -> (plan, new_state)`` reads nothing but its arguments (time
is ``snapshot.time``), so the controller, the tests and the evaluation harness all run exactly the same
code, and a decision over 1,000 guests takes a few milliseconds. Everything it remembers between ticks
lives in :class:`PolicyState`, a frozen value the caller passes back in.

The principles (DESIGN.md, "The default policy"): demand rises at once and decays slowly; pressure
(swap-in, major faults, little MemAvailable, a guest deflating itself) raises it. Each guest has tiers:
its need (demand + minimal headroom), its want (need + buffer) and, on a roomy host, a spare for a first
burst; the cushions scale with how roomy the host is (:func:`roominess`), so an over-committed host
keeps guests near demand. The highest tier that fits the budget is granted, topped up toward the next;
when even the needs do not fit, floors come first and the shares water-fill the rest. Growth is
immediate and never rate-limited, but is paid only from memory free now (a shrinking balloon still
holds its memory); shrinking is rate-limited with a dead band; a guest under pressure is never shrunk
to feed another unless the host itself is in danger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from autoballoon import guards
from autoballoon.guards import Progress, Status, clamp
from autoballoon.model import Action, GuestPolicy, GuestSnapshot, HostSnapshot, Plan
from autoballoon.tunables import Tunables
from autoballoon.units import human

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
_N = TypeVar("_N", int, I64)


class VMMemory(NamedTuple):
    """What the policy remembers about one VM between ticks (a NamedTuple: 1,000 of them per tick)."""

    status: str = ""
    demand: int | None = None  # smoothed demand estimate, bytes
    want: int | None = None  # demand with buffer and headroom, within [floor, max]
    floor: int | None = None
    ceiling: int | None = None
    pressure: bool = False
    seen_time: float | None = None  # snapshot.time of the last look
    seen_target: int | None = None
    seen_actual: int | None = None
    planned_target: int | None = None  # what this policy set (or would have, in a dry run)
    used: int | None = None
    swap_in: int | None = None
    major_faults: int | None = None
    last_grow: float | None = None
    stats_time: float | None = None  # last_update of the stats the rates were measured from
    pressure_at: float | None = None  # last time a pressure signal was seen
    stuck_until: float | None = None  # a stuck balloon is left alone until then
    shrink_wall: float | None = None  # wall time of the last shrink: wait for stats newer than this
    progress: Progress | None = None  # the stuck detector's mark
    manual_until: float | None = None
    warned_autodeflate: bool = False


#: What a VM seen for the first time remembers: nothing (every field at its default), so the per-VM
#: code reads what a VM remembers without testing for a first look each time.
_FIRST_LOOK = VMMemory()

# decide() reads each VM's memory and builds a managed VM's new one by position (by name, over 21
# fields and 1,000 VMs a tick, it costs several times as much): this pins the order it relies on.
assert VMMemory._fields == (
    "status", "demand", "want", "floor", "ceiling", "pressure", "seen_time", "seen_target", "seen_actual",
    "planned_target", "used", "swap_in", "major_faults", "last_grow", "stats_time", "pressure_at",
    "stuck_until", "shrink_wall", "progress", "manual_until", "warned_autodeflate",
)  # fmt: skip

# Enum members looked up once: ``Status.MANAGED`` costs ~60 ns each time, several times per VM.
_MANAGED, _EXCLUDED, _NO_STATS = Status.MANAGED, Status.EXCLUDED, Status.NO_STATS
_STUCK, _QUARANTINED, _MANUAL_HOLD = Status.STUCK, Status.QUARANTINED, Status.MANUAL_HOLD
_QUIET_BEFORE_MANAGED = ("", Status.EXCLUDED)  # becoming managed after these is no event


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything the policy remembers. Start with ``PolicyState()``; always pass back the one returned."""

    vms: Mapping[str, VMMemory] = field(default_factory=lambda: MappingProxyType({}))
    #: VMs the health guard has quarantined, with the reason (kept even while the VM is off).
    quarantined: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    time: float | None = None
    budget: int | None = None  # the host budget of the last decision
    reserve: int | None = None
    host_short: bool = False  # the last decision had to shrink below wants or protected targets


class _Row(NamedTuple):
    """A managed VM during one decision: what the budget math needs, and what to remember of it besides
    the decision's outcome (its VMMemory is built once, when the outcome is known).

    The per-VM loop keeps each row as a plain tuple of numbers, strings and None, in this order: the
    garbage collector stops tracking such a tuple at its first pass, so the rows of a tick do not join
    the objects every full collection walks (a NamedTuple, or a row holding the GuestSnapshot, stays
    tracked; measured: a tenth of the tick at 10,000 guests). decide() builds and unpacks rows by
    position, the rare steps name them with ``_Row._make``; a change of fields changes all three.
    """

    name: str
    target: int  # guest.target_bytes
    actual: int  # guest.actual_bytes (never None for a managed VM)
    floor: int
    ceiling: int
    need: int  # demand plus the minimal headroom: below it the guest swaps
    demand: int
    buffer: float | None  # its own buffer, if its policy sets one
    shares: int
    pressure: bool
    selfdef: bool  # it deflated its balloon by itself since the last look
    dt: float  # seconds since the last look (0 on the first): sizes its shrink step, see _shrink_steps()
    may_shrink: bool  # not cooling down after growth, and its last shrink's stats came in
    used: int
    last_grow: float | None
    stats_time: float | None
    pressure_at: float | None
    shrink_wall: float | None
    progress: Progress | None
    warned: bool  # warned_autodeflate
    available: int | None  # the guest's stats, for the action and the memory
    swap_in: int | None
    major_faults: int | None


_ROW_INDEX = {name: i for i, name in enumerate(_Row._fields)}


class _Fleet(NamedTuple):
    """The managed VMs' figures the budget math works on: the rows' columns, as NumPy arrays.

    Sizing cushions and moving targets is arithmetic on every VM; one NumPy operation over 1,000 VMs
    costs about what a single Python one costs per VM, so these passes run on columns. Every value is an
    integer below 2**53 or a float computed in the same order as in Python, so the results are exactly
    those of the per-VM expressions written beside each step.
    """

    target: I64
    actual: I64
    floor: I64
    ceiling: I64
    need: I64
    demand: I64
    buffers: tuple[float | None, ...]  # each VM's own buffer policy, if any (most have none)
    pressure: Bools
    may_shrink: Bools
    dt: F64


def _fleet(rows: Sequence[tuple[Any, ...]]) -> _Fleet:
    """The rows' columns the budget math needs, transposed once (in C) and converted to arrays."""
    columns = tuple(zip(*rows, strict=True)) or ((),) * len(_Row._fields)

    def column(name: str, dtype: type) -> npt.NDArray[Any]:
        return np.array(columns[_ROW_INDEX[name]], dtype=dtype)

    return _Fleet(
        target=column("target", np.int64),
        actual=column("actual", np.int64),
        floor=column("floor", np.int64),
        ceiling=column("ceiling", np.int64),
        need=column("need", np.int64),
        demand=column("demand", np.int64),
        buffers=columns[_ROW_INDEX["buffer"]],
        pressure=column("pressure", np.bool_),
        may_shrink=column("may_shrink", np.bool_),
        dt=column("dt", np.float64),
    )


def _named(rows: Sequence[tuple[Any, ...]]) -> list[_Row]:
    """The rows with their field names, for the steps that are rare enough not to mind the cost."""
    return [_Row._make(r) for r in rows]


def _shrink_steps(f: _Fleet, t: Tunables) -> I64:
    """The most each VM may be shrunk this tick without a host emergency: a share of its size per
    second since the last look. Per VM: ``max(min_step, int(ceiling * rate * (dt or interval)))``."""
    dt = np.where(f.dt != 0.0, f.dt, t.interval_s)
    return np.maximum(t.shrink_min_step_bytes, (f.ceiling * t.shrink_rate_per_s * dt).astype(np.int64))


def host_reserve(snapshot: HostSnapshot, tunables: Tunables) -> int:
    """Memory the host keeps for itself: the configured reserve, or a share of its RAM."""
    if tunables.host_reserve_bytes is not None:
        return tunables.host_reserve_bytes
    return max(tunables.reserve_bytes, int(snapshot.mem_total * tunables.reserve_fraction))


def _align_up(n: _N, align: int) -> _N:
    return -(-n // align) * align  # type: ignore[operator, no-any-return]


def _align_down(n: _N, align: int) -> _N:
    return n // align * align  # type: ignore[operator, no-any-return]


def water_fill(lo: Sequence[int], hi: Sequence[int], weights: Sequence[float], amount: int) -> list[int]:
    """Give each ``i`` ``lo[i]`` plus ``level * weights[i]`` of ``amount``, never above ``hi[i]``.

    One common level for everybody (a water-fill): a VM whose cap is low takes all it can and the
    others share the rest by weight. With equal weights it cuts the largest surpluses first.
    Returns integer allocations whose sum never exceeds ``sum(lo) + amount``.
    """
    n = len(lo)
    caps = [max(0, hi[i] - lo[i]) for i in range(n)]
    if amount <= 0:
        return list(lo)
    if amount >= sum(caps):
        return [lo[i] + caps[i] for i in range(n)]
    # Each VM's level to fill its cap, computed once (not once per comparison of the sort).
    full_at = [caps[i] / weights[i] if weights[i] > 0 else 0.0 for i in range(n)]
    order = sorted((i for i in range(n) if weights[i] > 0), key=full_at.__getitem__)
    remaining = float(amount)
    weight_left = float(sum(weights[i] for i in order))
    level = 0.0
    for i in order:
        needed = full_at[i]
        if (needed - level) * weight_left <= remaining:
            remaining -= (needed - level) * weight_left
            weight_left -= weights[i]
            level = needed
        else:
            level += remaining / weight_left
            break
    return [lo[i] + min(caps[i], int(level * weights[i])) if weights[i] > 0 else lo[i] for i in range(n)]


def _share_out(rows: Sequence[_Row], steps: Sequence[int], pool: int, danger: bool) -> list[int] | None:
    """Needs do not fit: move toward the shares-weighted water-fill from the floors, gently.

    The fair share of each VM does not depend on who is under pressure right now (otherwise two
    short guests would take memory from each other in turn). Moving toward it, a VM above its share is
    cut at most by its shrink step, and never while it is under pressure; a VM below its share grows
    only into what the others actually gave up, so the budget holds at every tick. Returns None when
    even that cannot fit (the host is short now): then the caller cuts straight to the shares.
    """
    floors = [r.floor for r in rows]
    weights = [float(r.shares) for r in rows]
    fair = water_fill(floors, [r.need for r in rows], weights, pool - sum(floors))
    lo: list[int] = []
    hi: list[int] = []
    for r, share, step in zip(rows, fair, steps, strict=True):
        target = r.target
        if share < target:
            low = share if danger else max(share, target - step)
            if r.pressure and not danger:
                low = max(low, min(target, r.need))
        else:
            low = min(target, r.need)
        low = max(low, r.floor)
        lo.append(low)
        hi.append(max(share, low))
    if danger or sum(lo) > pool:
        return None
    return water_fill(lo, hi, weights, pool - sum(lo))


def roominess(needs: int, ceilings: int, pool: int, t: Tunables) -> float:
    """How much of their cushions the guests keep, from 0 (an over-committed host) to 1 (a roomy one).

    ``rho`` is the share of the memory between all needs and all maxima that the host could give: 1 or
    more when it could hold every guest at its max. Squeezing a roomy host's guests gains it nothing it
    lacks, while a cushion there absorbs the first burst or job start before any stats show it; on an
    over-committed host every cushion is memory another guest may need, so cushions shrink toward the
    minimal headroom as ``rho`` falls to ``roomy_from``.
    """
    if ceilings <= needs:
        return 1.0 if pool >= needs else 0.0
    rho = (pool - needs) / (ceilings - needs)
    return min(1.0, max(0.0, (rho - t.roomy_from) / (1.0 - t.roomy_from)))


def _cushions(f: _Fleet, scale: float, t: Tunables) -> tuple[I64, I64]:
    """Each VM's want (its need plus the buffer) and its roomy goal (the want plus a spare), both
    scaled by the host's room; a VM's own ``buffer`` policy is kept as it is.

    The spare is the smaller of a multiple of demand and a share of the room left under the max: a
    cushion a burst of a few times a small demand fits in, without holding big idle guests near max."""
    align = t.target_align_bytes
    default_buffer = t.buffer_short + (t.buffer - t.buffer_short) * scale
    buffer: float | F64 = default_buffer
    if f.buffers.count(None) != len(f.buffers):
        buffer = np.array([default_buffer if b is None else b for b in f.buffers], dtype=np.float64)
    # want = max(need, clamp(align_up(int(demand * (1 + buffer)) + headroom), floor, ceiling))
    want = _align_up((f.demand * (1 + buffer)).astype(np.int64) + t.min_headroom_bytes, align)
    want = np.maximum(f.need, np.minimum(np.maximum(want, f.floor), f.ceiling))
    if not scale > 0.0:
        return want, want
    # spare = align_down(int(min(scale * roomy_buffer * demand, scale * roomy_gap * (ceiling - want))))
    by_demand, by_gap = scale * t.roomy_buffer, scale * t.roomy_gap
    spare = _align_down(np.minimum(by_demand * f.demand, by_gap * (f.ceiling - want)).astype(np.int64), align)
    return want, np.minimum(want + spare, f.ceiling)


def _goals(tiers: Sequence[I64], pool: int) -> I64 | None:
    """Where each VM should end: the highest tier that fits the pool in full, topped up toward the next
    one in proportion to each VM's step between them (so a short host cuts every cushion by the same
    share, the spares first, then the buffers, before anyone goes below its need). ``tiers``
    go from the needs up; None when even the needs do not fit (then the shares decide)."""
    below: I64 | None = None
    for tier in reversed(tiers):
        total = int(tier.sum())
        if total <= pool:
            if below is None:
                return tier
            steps = (below - tier).astype(np.float64).tolist()
            return np.array(water_fill(tier.tolist(), below.tolist(), steps, pool - total), dtype=np.int64)
        below = tier
    return None


def _move(f: _Fleet, goal: I64, t: Tunables) -> I64:
    """Where each VM's target goes toward ``goal`` when the host has room: growth at once; shrinking by
    at most its step, never within its dead band, while cooling down after growth or waiting for the
    stats of its last shrink, nor under pressure.

    Per VM: growing, ``goal`` (``target`` if that is less than the smallest growth step and the target
    is not below the floor); above its ceiling, the ceiling; held, ``target``; else
    ``max(goal, align_down(target - step), floor)``."""
    target = f.target
    grown = np.where((goal - target >= t.grow_min_step_bytes) | (target < f.floor), goal, target)
    dead_band = np.maximum(
        t.shrink_dead_band_bytes, (f.ceiling * t.shrink_dead_band_fraction).astype(np.int64)
    )
    held = f.pressure | ~f.may_shrink | (target - goal < dead_band)
    stepped = _align_down(target - _shrink_steps(f, t), t.target_align_bytes)
    shrunk = np.maximum(np.maximum(goal, stepped), f.floor)
    shrunk = np.where(target > f.ceiling, f.ceiling, np.where(held, target, shrunk))
    return np.where(goal >= target, grown, shrunk)


def _pay_growth(raw_rows: Sequence[tuple[Any, ...]], f: _Fleet, alloc: I64, pool: int) -> I64:
    """Growth is paid only from memory that is free now (Xen squeezed's two-phase rule).

    A shrinking balloon gives its memory back slowly (inflation is slow, deflation fast), so until it
    has, the host holds ``max(actual, target)`` of every VM. If the plan's growth does not fit beside
    that in ``pool`` (host MemAvailable less its reserve, plus what the VMs hold), growth beyond what is
    already granted waits for the freed memory to arrive: VMs under pressure or deflating themselves
    get it first, the others share the rest by shares. A configured budget caps targets, not this.
    """
    if int(np.maximum(f.actual, alloc).sum()) <= pool:
        return alloc
    rows = _named(raw_rows)
    lo: list[int] = []
    urgent: list[int] = []
    wanted = alloc.tolist()
    for r, a in zip(rows, wanted, strict=True):
        actual = r.actual
        low = max(actual, min(r.target, a), min(r.floor, a)) if a > actual else max(a, actual)
        lo.append(low)
        urgent.append(a if a > actual and (r.pressure or r.selfdef) else low)
    room = pool - sum(lo)
    weights = [float(r.shares) or 1.0 for r in rows]
    first = water_fill(lo, urgent, weights, room)
    paid = water_fill(
        first, [max(a, f) for a, f in zip(wanted, first, strict=True)], weights, room - (sum(first) - sum(lo))
    )
    paid = [p if a > r.actual else a for r, a, p in zip(rows, wanted, paid, strict=True)]
    return np.array(paid, dtype=np.int64)


def decide(
    snapshot: HostSnapshot,
    policies: Mapping[str, GuestPolicy],
    state: PolicyState,
    tunables: Tunables,
) -> tuple[Plan, PolicyState]:
    """One decision: the plan for this snapshot and the state to pass to the next call.

    ``policies`` maps VM name to its effective policy (config merged with metadata); a VM missing from it
    uses its own ``GuestSnapshot.policy``.
    """
    t = tunables
    now = snapshot.time
    align = t.target_align_bytes
    headroom = t.min_headroom_bytes
    tol = t.stuck_tolerance_bytes
    prev_vms = state.vms
    quarantined = state.quarantined
    new_vms: dict[str, VMMemory] = {}
    status: dict[str, str] = {}
    reasons: dict[str, str] = {}
    events: list[str] = []
    rows: list[tuple[Any, ...]] = []  # _Row's fields, see there
    held = 0  # memory the non-managed running VMs hold or are going to
    counted_actual = 0  # what every counted VM holds now
    holds: list[tuple[GuestSnapshot, int, int, str]] = []  # held VMs whose target follows actual up

    for g in snapshot.guests:
        name = g.name
        pol = policies.get(name) or g.policy
        prev = prev_vms.get(name, _FIRST_LOOK)
        # What it remembers, all at once, in VMMemory's order (a field at a time costs more).
        (prev_status, prev_demand, _, _, _, _, prev_seen_time, seen_target, seen_actual, planned_target,
         prev_used, prev_swap_in, prev_major_faults, last_grow, prev_stats_time, prev_pressure_at,
         stuck_until, shrink_wall, prev_progress, manual_until, warned) = prev  # fmt: skip
        floor, ceiling = guards.limits(g, pol, t)
        target = g.target_bytes
        actual = g.actual_bytes

        excluded = guards.exclusion(g, pol)
        if excluded is not None:
            status[name] = _EXCLUDED
            reasons[name] = excluded
            new_vms[name] = VMMemory(status=_EXCLUDED, seen_time=now, seen_target=target, seen_actual=actual)
            continue

        progress = guards.track_progress(prev_progress, actual, target, now, t)
        if guards.manual_change(target, seen_target, planned_target):
            manual_until = now + t.manual_grace_s
        if manual_until is not None and manual_until <= now:
            manual_until = None
        selfdef = guards.self_deflated(actual, seen_actual, target, seen_target, t)
        follow = "autodeflate" if selfdef else ""  # why a held VM's target follows its actual up
        if stuck_until is not None and stuck_until <= now:
            stuck_until = None
        holding = actual if actual is not None else target

        if name in quarantined:
            st, why = _QUARANTINED, quarantined[name]
            holding = max(target, holding)
        elif manual_until is not None:
            st, why = _MANUAL_HOLD, f"target set outside autoballoon; held for {manual_until - now:.0f} s"
            holding = max(target, holding)
        elif stuck_until is not None or (progress is not None and guards.is_stuck(progress, now, t)):
            st = _STUCK
            if stuck_until is None:  # just found: take the balloon where it is, retry later
                stuck_until = now + t.stuck_retry_s
                follow = "stuck" if actual is not None and actual > target else ""
                why = (
                    f"balloon at {human(actual)} did not move toward target {human(target)} for "
                    f"{t.stuck_after_s:g} s; left alone for {t.stuck_retry_s:g} s"
                )
            else:
                why = f"balloon did not follow its target; left alone for {stuck_until - now:.0f} s more"
        elif (hold := guards.hold_reason(g, snapshot.wall_time, t)) is not None:
            st, why = _NO_STATS, hold + "; held, never shrunk"
            holding = max(target, holding)
        else:
            st, why = _MANAGED, ""

        if st != prev_status and (st != _MANAGED or prev_status not in _QUIET_BEFORE_MANAGED):
            events.append(f"{name}: {st}" + (f": {why}" if why else ""))
        status[name] = st
        reasons[name] = why

        if st != _MANAGED:
            counted_actual += actual if actual is not None else target
            if follow and actual is not None:
                holding = max(holding, min(_align_up(actual, align), ceiling))
                holds.append((g, floor, ceiling, follow))
            held += holding
            new_vms[name] = VMMemory(
                status=st,
                demand=prev_demand,
                floor=floor,
                ceiling=ceiling,
                seen_time=now,
                seen_target=target,
                seen_actual=actual,
                planned_target=target,
                used=g.used_bytes,
                swap_in=g.stats.swap_in,
                major_faults=g.stats.major_faults,
                last_grow=last_grow,
                stuck_until=stuck_until,
                progress=progress,
                manual_until=manual_until,
                warned_autodeflate=warned,
            )
            continue

        # --- a managed VM: estimate demand --------------------------------------------------------
        assert actual is not None  # hold_reason() holds VMs whose balloon never answered
        counted_actual += actual
        autodeflate = g.balloon.autodeflate
        if not autodeflate and not warned:
            events.append(
                f"{name}: warning: managed without autodeflate; a sudden allocation faster than one tick can "
                f"OOM-kill in the guest (fix at next boot: autoballoon balloon {name} --autodeflate on)"
            )
            warned = True
        stats = g.stats
        used = g.used_bytes or 0
        # With autodeflate, ``used`` subtracts the balloon as libvirt last heard of it from stats of
        # another instant (on the rig, stats show an inflation a tick before ``actual`` does; stats
        # polled every few seconds lag it). While the balloon moves, a change in ``used`` may be the
        # balloon's, not the guest's: no trend is read from it then.
        settled = not autodeflate or (
            seen_actual is not None
            and seen_target == target
            and abs(actual - seen_actual) <= tol
            and abs(actual - target) <= tol
        )
        available = stats.available or 0
        signal = available < t.low_available_bytes or selfdef
        raw = used
        dt = now - prev_seen_time if prev_seen_time is not None else 0.0
        # Rates are per second of *stats* time: a guest polled every 10 s shows 10 s of change at once.
        stats_time = stats.last_update
        sdt = stats_time - prev_stats_time if prev_stats_time and stats_time else 0.0
        if sdt > 0:  # (never on a first look: it has no stats_time)
            if settled and prev_used is not None and used > prev_used:
                raw += int((used - prev_used) / sdt * t.trend_lookahead_s)
            boost = 0
            if prev_swap_in is not None and stats.swap_in is not None and stats.swap_in > prev_swap_in:
                swapped = stats.swap_in - prev_swap_in
                if swapped / sdt > t.swap_in_pressure_bytes_per_s:
                    boost = swapped
            if (
                prev_major_faults is not None
                and stats.major_faults is not None
                and (stats.major_faults - prev_major_faults) / sdt > t.major_fault_pressure_per_s
            ):
                boost = max(boost, 1)
            if boost:
                signal = True
                raw += boost + int(ceiling * t.pressure_boost_fraction)
        elif sdt == 0 and prev_stats_time:
            stats_time = prev_stats_time  # nothing new: keep measuring rates from the last report
        pressure_at = now if signal else prev_pressure_at
        pressure = pressure_at is not None and now - pressure_at < t.pressure_hold_s
        if prev_demand is None or raw >= prev_demand or dt <= 0:
            demand = raw
        else:
            demand = raw + int((prev_demand - raw) * math.exp(-dt / t.demand_decay_s))
        # need: demand plus the minimal headroom (below it the guest swaps). Its cushions (the buffer,
        # a spare on a roomy host) are sized once the host's room is known, see _cushions().
        need = clamp(-(-(demand + headroom) // align) * align, floor, ceiling)  # _align_up(), inline
        if selfdef:  # it ran past its swap: what it took back, and more, since it still swaps
            boost = int(ceiling * t.self_deflate_boost_fraction)
            need = max(need, min(_align_up(actual + boost, align), ceiling))
        if pressure:
            need = max(need, min(target, ceiling))

        cooling = last_grow is not None and now - last_grow < t.shrink_cooldown_after_grow_s
        # One shrink per fresh stats report: the next step is judged on what the last one did.
        unseen = shrink_wall is not None and (stats_time or 0) <= shrink_wall
        rows.append(
            (  # in _Row's field order
                name,
                target,
                actual,
                floor,
                ceiling,
                need,
                demand,
                pol.buffer,
                pol.shares if pol.shares is not None else t.default_shares,
                pressure,
                selfdef,
                dt,
                not (cooling or unseen),
                used,
                last_grow,
                stats_time,
                pressure_at,
                shrink_wall,
                progress,
                warned,
                stats.available,
                stats.swap_in,
                stats.major_faults,
            )
        )

    # --- the host budget and the water-fill ---------------------------------------------------------
    reserve = host_reserve(snapshot, t)
    host_budget = snapshot.mem_available + counted_actual - reserve
    budget = host_budget if t.host_budget_bytes is None else min(host_budget, t.host_budget_bytes)
    pool = budget - held
    danger = snapshot.mem_available < reserve
    f = _fleet(rows)
    scale = roominess(int(f.need.sum()), int(f.ceiling.sum()), pool, t)
    wants, spares = _cushions(f, scale, t)
    goals = _goals((f.need, wants, spares), pool)
    short = int(wants.sum()) > pool
    alloc: I64
    if goals is not None:
        alloc = _move(f, goals, t)
        if int(alloc.sum()) > pool:  # growth now, shrinks still on their way: cut the surpluses above
            short = True  # the goals, largest first
            cut = water_fill(goals.tolist(), alloc.tolist(), [1.0] * len(rows), pool - int(goals.sum()))
            alloc = np.array(cut, dtype=np.int64)
    else:
        short = True
        named = _named(rows)
        shared = _share_out(named, _shrink_steps(f, t).tolist(), pool, danger)
        danger = danger or shared is None
        if shared is None:  # even gradual cuts cannot bring the targets within the budget
            floors = f.floor.tolist()
            weights = [float(r.shares) for r in named]
            shared = water_fill(floors, f.need.tolist(), weights, pool - sum(floors))
        alloc = np.array(shared, dtype=np.int64)
    alloc = _pay_growth(rows, f, alloc, host_budget - held)  # what the host has, whatever the budget
    # clamp(align_down(alloc), floor, ceiling): safe_target(..., may_shrink=True)
    news = np.minimum(np.maximum(_align_down(alloc, align), f.floor), f.ceiling).tolist()

    actions: list[Action] = []
    for row, new, want in zip(rows, news, wants.tolist(), strict=True):
        # The row's fields at once, named as in _Row (a field at a time costs a third of this loop).
        (name, old, actual, floor, ceiling, _, demand, _, _, pressure, selfdef, _, _, used,
         last_grow, stats_time, pressure_at, shrink_wall, progress, warned,
         available, swap_in, major_faults) = row  # fmt: skip
        if new != old:
            if new > old:
                reason = (
                    "autodeflate"
                    if selfdef
                    else "pressure"
                    if pressure
                    else "floor"
                    if old < floor
                    else "demand"
                )
                if new < want:
                    reason += " (host-short)"
                last_grow = now
            else:
                if old > ceiling and new == ceiling:
                    reason = "max"
                elif new >= want:
                    reason = "idle"
                else:
                    reason = "host-danger" if danger else "host-short"
                shrink_wall = snapshot.wall_time
            # vm, old_target, new_target, reason, demand, available, budget
            actions.append(Action(name, old, new, reason, demand, available, budget))
        new_vms[name] = VMMemory._make(  # by position, in the order pinned under VMMemory
            (
                _MANAGED,
                demand,
                want,
                floor,
                ceiling,
                pressure,
                now,  # seen_time
                old,  # seen_target
                actual,  # seen_actual
                new,  # planned_target
                used,
                swap_in,
                major_faults,
                last_grow,
                stats_time,
                pressure_at,
                None,  # stuck_until: a managed VM is not stuck
                shrink_wall,
                progress,
                None,  # manual_until: nor held after a manual change
                warned,
            )
        )

    # Held VMs whose balloon is above its target (deflated itself, or stuck): the target follows it up.
    for g, floor, ceiling, why in holds:
        old = g.target_bytes
        new = guards.safe_target(
            _align_up(g.actual_bytes or old, align), old, floor, ceiling, may_shrink=False
        )
        if new > old:
            actions.append(Action(g.name, old, new, why, available=g.stats.available, budget=budget))
            new_vms[g.name] = new_vms[g.name]._replace(planned_target=new, last_grow=now)

    plan = Plan(
        actions=tuple(actions),
        status=status,
        status_reason=reasons,
        budget=budget,
        events=tuple(events),
    )
    new_state = PolicyState(
        vms=new_vms,  # never mutated after this point
        quarantined=state.quarantined,
        time=now,
        budget=budget,
        reserve=reserve,
        host_short=short or danger,
    )
    return plan, new_state
