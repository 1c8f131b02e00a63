"""The simulated host: N guests stepped on virtual time, vectorised over guests with NumPy.

Every per-guest quantity is one preallocated array and each step is a fixed sequence of in-place NumPy
operations over all guests: no Python loop over guests, no allocation in the common path. Demand comes
from a table sampled once per scenario (it loops after ``run.duration``). Rare events (OOM, autodeflate,
swapping) take a slower branch only on the steps where they happen.

The guest model, per guest, in bytes (``docs/scenarios.md`` explains it with the stats it produces)::

    actual = kernel + resident anonymous + page cache + free       (balloon = max - actual)
    resident anonymous = demand - swapped
    swapped = clip(demand - (actual - kernel - cache_min - min_free), 0, swap)

and for the host ``mem_available = ram - base_used - sum(actual + qemu_overhead)`` exactly, so memory is
conserved by construction. Scenario events (a guest's stats stop, its driver loads late or loses requests, it
is paused, the host's own use grows) are applied at their moment between steps. The public surface is
:class:`Simulation`; everything else is private.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from autoballoon.errors import InvalidValueError, LimitError, UnknownVMError
from autoballoon.model import (
    BalloonConfig,
    GuestOS,
    GuestPolicy,
    GuestSnapshot,
    GuestStats,
    HostSnapshot,
    VMState,
)
from autoballoon.sim.demand import SECONDS_PER_DAY, sample
from autoballoon.sim.physics import DEFAULT_PHYSICS, Physics
from autoballoon.sim.scenario import Event, GuestSpec, Scenario
from autoballoon.units import format_size

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_NS = 1_000_000_000
# The ufunc reductions themselves: ndarray.any()/.min() add a Python wrapper that costs more than the work
# on 100 elements, and they run every step.
_RATES_CACHE_SIZE = 16
_any = np.logical_or.reduce
_min = np.minimum.reduce
_UUID_NAMESPACE = uuid.UUID("6f1d3c1e-2b7a-4e55-9a43-5a1d0c0ba11e")
_N_STATS = 8


@dataclass(frozen=True, slots=True)
class _Rates:
    """Per-substep amounts for one substep length ``h`` (computed once per distinct h)."""

    inflate: int
    inflate_pressure: int
    deflate: int
    cache_growth: int
    oom_restart: int
    thrash: float
    base_cpu_ns: I64
    storm_extra_ns: I64


def _ints(n: int, values: list[int]) -> I64:
    return np.array(values, dtype=np.int64).reshape(n)


def _flags(n: int, values: list[bool]) -> B:
    return np.array(values, dtype=np.bool_).reshape(n)


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


class Simulation:
    """A simulated KVM host. State lives in this object (nothing is persisted).

    ``Simulation(scenario, seed=0)`` builds the guests at virtual time 0 with their balloons at their
    initial targets. ``step(dt)`` / ``run(seconds)`` advance time without any controller; ``set_target`` /
    ``set_targets`` are what a balloon manager does. Metric arrays (``max``, ``target``, ``actual``,
    ``demand``, ``intended_demand``, ``allocation``, ``swap_used``, ``under_pressure``, ``oom_kills``,
    ``cpu``, ``cache``, ``driver_target``) are read-only views indexed like ``names``; they change in
    place as time passes, so copy them to keep a value. ``demand_at(times)`` reads the demand traces at
    any times (past or future), for an oracle.
    """

    def __init__(self, scenario: Scenario, seed: int = 0, physics: Physics = DEFAULT_PHYSICS) -> None:
        self.scenario = scenario
        self.seed = seed
        self.physics = physics
        guests = scenario.guests
        self.n = len(guests)
        self._names = tuple(g.name for g in guests)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._step = scenario.run.step
        self._time = 0.0
        self._fix_properties(guests)
        self._record_hypervisor(guests)
        self._clear_faults()
        self._start_dynamic_state(guests)
        self._start_stats(seed)
        self._allocate_scratch()
        self._boot()
        self._expose_views()

    # ------------------------------------------------------------------------- construction, in order

    def _fix_properties(self, guests: tuple[GuestSpec, ...]) -> None:
        """What never changes about each guest: its size, kernel, swap, switches and CPU."""
        n, tu = self.n, self.physics
        self._max = _ints(n, [g.max for g in guests])
        self._kernel = _ints(
            n, [g.kernel if g.kernel is not None else _default_kernel(g.max, tu) for g in guests]
        )
        self._swap_size = _ints(n, [g.swap if g.swap is not None else tu.swap_default_bytes for g in guests])
        # actual minus this = room for anonymous memory before the guest swaps
        self._min_free = tu.min_free(self._max)
        self._reserved = self._kernel + tu.cache_min_bytes + self._min_free
        self._autodeflate = _flags(n, [g.autodeflate for g in guests])
        self._storm = _flags(n, [g.cpu_storm for g in guests])
        self._any_storm = bool(self._storm.any())
        self._storm_below = self._max - tu.storm_min_balloon_bytes
        self._stuck = _flags(n, [g.stuck or g.balloon == "none" for g in guests])
        self._reports_max = _flags(n, [g.autodeflate or g.os == "windows" for g in guests])
        self._stats_capable = _flags(n, [g.stats for g in guests])
        self._cpu_base = np.array([g.cpu if g.cpu is not None else tu.cpu_baseline for g in guests])
        self._vcpus = _ints(n, [g.vcpus for g in guests])
        self._max_vcpus = _ints(n, [g.max_vcpus for g in guests])

    def _record_hypervisor(self, guests: tuple[GuestSpec, ...]) -> None:
        """What the simulated hypervisor stores about each VM (the backend edits these)."""
        tu = self.physics
        self.policies: list[GuestPolicy] = [g.policy for g in guests]
        self.balloons: list[BalloonConfig] = [
            BalloonConfig(
                model=g.balloon,
                autodeflate=g.autodeflate,
                free_page_reporting=g.free_page_reporting,
                stats_period=round(g.stats_period or tu.stats_period_default),
            )
            for g in guests
        ]
        self._stats_period = np.array([g.stats_period or tu.stats_period_default for g in guests])
        self._os: list[GuestOS] = ["windows" if g.os == "windows" else "linux" for g in guests]
        self._uuids = [str(uuid.uuid5(_UUID_NAMESPACE, f"{self.scenario.source}/{g.name}")) for g in guests]
        self._stats_cache: list[GuestStats] = [GuestStats() for _ in guests]

    def _clear_faults(self) -> None:
        """Faults the scenario's events switch: all off until an event says otherwise."""
        n, scenario = self.n, self.scenario
        self._driver = np.ones(n, dtype=np.bool_)  # the balloon driver is loaded
        self._reporting = np.ones(n, dtype=np.bool_)  # its statistics are switched on
        self._paused = np.zeros(n, dtype=np.bool_)
        self._any_paused = False
        self._requests = np.ones(n, dtype=np.bool_)  # the driver receives the targets the host sets
        self._base_used = scenario.host.base_used
        self._base_ramp: tuple[float, float, int, int] | None = None  # (t0, t1, from, to)
        self._events = list(scenario.events)
        self._next_event = self._events[0].at if self._events else np.inf

    def _start_dynamic_state(self, guests: tuple[GuestSpec, ...]) -> None:
        """Balloons at their initial targets, no cache beyond the least, no demand, kill or swap yet."""
        n, tu = self.n, self.physics
        # What the host was asked for (what it reports as the target), and what the driver works toward:
        # the same unless a request was lost on its way to the driver.
        self._asked = _ints(n, [g.target for g in guests])
        self._target = self._asked.copy()
        self._actual = self._target.copy()
        self._cache = np.full(n, tu.cache_min_bytes, dtype=np.int64)
        self._killed = np.zeros(n, dtype=np.int64)  # demand removed by OOM kills, regrowing
        self._any_killed = False
        self._intended = np.zeros(n, dtype=np.int64)  # the workload's demand before any kill
        self._demand = np.zeros(n, dtype=np.int64)  # effective demand (intended minus killed)
        self._swap_used = np.zeros(n, dtype=np.int64)
        self._any_swap = False
        self._swap_in = np.zeros(n)  # cumulative bytes (float: fractional thrash per step)
        self._swap_out = np.zeros(n)
        self._oom_kills = np.zeros(n, dtype=np.int64)
        self._cpu_ns = np.zeros(n, dtype=np.int64)
        self._hold = np.zeros(n, dtype=np.bool_)  # autodeflated: no re-inflation until a new target
        self._pressure = np.zeros(n, dtype=np.bool_)
        self._storming = np.zeros(n, dtype=np.bool_)
        self._can_deflate = np.zeros(n, dtype=np.int64)
        self._can_inflate = np.zeros(n, dtype=np.int64)
        self._move_at = np.zeros(n)  # the driver acts on a new target from this time (balloon latency)
        self._any_waiting = False

    def _start_stats(self, seed: int) -> None:
        """Guest-visible stats: as last published (0 last_update = never, as QEMU says), and as captured
        by the guest but not yet published (the report's delay); each guest's first report at a phase of
        its period drawn from ``seed``."""
        n, tu = self.n, self.physics
        # One row per stat (total, available, free, caches, swap in, swap out, major faults, OOM kills).
        # A guest's newest capture is published (visible, stamped) ``stats_delay_s`` after it was taken;
        # until then a reader sees the one before. Since the delay is at most a period, a capture is
        # always published by the time the next one is taken: two buffers hold all there is, and no
        # step pays for publishing (readers choose between the two).
        self._published = np.zeros((_N_STATS, n), dtype=np.int64)
        self._st_last = np.zeros(n)  # its stamp, wall seconds (0 = never)
        self._captured = np.zeros((_N_STATS, n), dtype=np.int64)
        self._publish_at = np.full(n, np.inf)  # virtual time the capture is published (inf: none)
        self._stats_delay = np.minimum(tu.stats_delay_s, self._stats_period)
        rng = np.random.default_rng([seed, n])
        self._phase = rng.uniform(0.0, 1.0, n) * self._stats_period
        self._next_stats = np.full(n, np.inf)
        self._next_stats_min = np.inf

    def _allocate_scratch(self) -> None:
        """Scratch arrays for the step, allocated once so that a step allocates nothing."""
        n = self.n
        self._room = np.zeros(n, dtype=np.int64)
        self._need = np.zeros(n, dtype=np.int64)
        self._up = np.zeros(n, dtype=np.int64)
        self._slack = np.zeros(n, dtype=np.int64)
        self._deficit = np.zeros(n, dtype=np.int64)
        self._tmp = np.zeros(n, dtype=np.int64)
        self._ftmp = np.zeros(n)
        self._mask = np.zeros(n, dtype=np.bool_)
        self._new_swap = np.zeros(n, dtype=np.int64)
        self._due = np.zeros(n, dtype=np.bool_)
        self._due_max = np.zeros(n, dtype=np.bool_)
        self._rates: dict[float, _Rates] = {}

    def _boot(self) -> None:
        """Demand at time 0, the events that hold from boot, and the balloons as far as they got."""
        self._table = self._build_demand_table()
        self._table.flags.writeable = False
        np.copyto(self._intended, self._table[0])
        self._row: I64 = self._table[0]  # the intended demand now: a table row, or _intended when paused
        np.copyto(self._demand, self._intended)
        self._apply_events(0.0)  # what holds from boot: a driver not loaded yet, a guest paused at once
        self._update_movers()
        self._schedule_stats(np.arange(self.n), self._phase)
        # The guest booted at max and its balloon inflated as far as it could toward the initial target
        # (a stuck driver wedged there; a driver that has not loaded yet not at all).
        floor = self._reserved + np.maximum(self._demand - self._swap_size, 0)
        initial = np.clip(self._target, np.minimum(floor, self._max), self._max)
        np.copyto(self._actual, np.where(self._driver, initial, self._max))
        self._settle()

    def _expose_views(self) -> None:
        """The read-only metric arrays, views that change in place as time passes."""
        ro = _readonly
        self.max: I64 = ro(self._max)
        self.target: I64 = ro(self._asked)
        #: The target the balloon driver works toward: ``target`` unless a request was lost (an event
        #: ``requests = false``), then the last one it received.
        self.driver_target: I64 = ro(self._target)
        self.actual: I64 = ro(self._actual)
        self.allocation: I64 = self.actual  # host memory granted to the guest (= actual; no FPR model)
        self.demand: I64 = ro(self._demand)
        self.swap_used: I64 = ro(self._swap_used)
        self.under_pressure: B = ro(self._pressure)
        self.oom_kills: I64 = ro(self._oom_kills)
        self.cpu: I64 = ro(self._cpu_ns)
        self.cache: I64 = ro(self._cache)
        self.kernel: I64 = ro(self._kernel)
        #: The least a guest needs beyond its workload's demand not to swap: kernel, the page cache it
        #: never drops and its min watermark. The oracle plans with it and the metrics
        #: charge every guest at least ``demand + headroom``.
        self.headroom: I64 = ro(self._reserved)

    # ----------------------------------------------------------------------------------- public API

    @property
    def time(self) -> float:
        """Virtual seconds since the start of the scenario."""
        return self._time

    @property
    def wall_time(self) -> float:
        """The wall clock guest stats are stamped with (``physics.epoch + time``)."""
        return self.physics.epoch + self._time

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def intended_demand(self) -> I64:
        """The workload's demand now before any OOM kill (frozen while a guest is paused); read-only."""
        return _readonly(self._row)

    @property
    def base_used(self) -> int:
        """The host's own memory use now (kernel, libvirtd, any non-VM process)."""
        return self._base_used

    @property
    def host_available(self) -> int:
        """Host MemAvailable, signed: negative means the host is overrun (it would swap)."""
        used = int(self._actual.sum()) + self.n * self.physics.qemu_overhead_bytes
        return self.scenario.host.ram - self._base_used - used

    def paused(self, vm: int | str) -> bool:
        """Whether a guest is paused now (by a scenario event)."""
        return bool(self._paused[self.index(vm)])

    def index(self, vm: int | str) -> int:
        """The array index of a guest given by index or name; unknown names list the known ones."""
        if isinstance(vm, str):
            try:
                return self._index[vm]
            except KeyError:
                raise UnknownVMError(vm, list(self._names)) from None
        if isinstance(vm, bool) or not 0 <= int(vm) < self.n:
            raise UnknownVMError(str(vm), list(self._names))
        return int(vm)

    def set_target(self, vm: int | str, target_bytes: int) -> None:
        """Ask the guest's balloon for ``target_bytes`` (0..max); the driver moves ``actual`` over time.

        The host takes the request even while the driver loses requests; the driver then never sees it,
        and only a request sent again once they arrive moves it (the same value counts: it is new to the
        driver)."""
        i = self.index(vm)
        value = int(target_bytes)
        if not 0 <= value <= self._max[i]:
            raise LimitError(
                self._names[i],
                "target",
                format_size(max(value, 0)) if value >= 0 else str(value),
                f"must be from 0 to max {format_size(int(self._max[i]))}",
            )
        self._asked[i] = value
        if value != self._target[i] and self._requests[i]:
            idle = bool(self._actual[i] == self._target[i])
            self._target[i] = value
            self._new_target(np.array([i]), np.array([idle]))

    def set_targets(self, targets: npt.ArrayLike) -> None:
        """Set every guest's target at once (an int64 array indexed like ``names``); all or nothing."""
        arr = np.asarray(targets)
        if arr.shape != (self.n,) or not np.issubdtype(arr.dtype, np.integer):
            raise InvalidValueError("targets", f"array {arr.dtype}{arr.shape}", f"{self.n} integers (bytes)")
        bad = np.flatnonzero((arr < 0) | (arr > self._max))
        if bad.size:
            i = int(bad[0])
            raise LimitError(
                self._names[i], "target", str(int(arr[i])), f"must be from 0 to max {int(self._max[i])} bytes"
            )
        np.copyto(self._asked, arr)
        changed = np.flatnonzero((arr != self._target) & self._requests)
        if changed.size:
            idle = self._actual[changed] == self._target[changed]
            self._target[changed] = arr[changed]
            self._new_target(changed, idle)

    def set_vcpus(self, vm: int | str, count: int) -> None:
        """Change a guest's active vCPUs (1..max_vcpus); CPU time accrues per vCPU."""
        i = self.index(vm)
        if not 1 <= count <= self._max_vcpus[i]:
            raise LimitError(
                self._names[i], "vCPU count", str(count), f"must be from 1 to {int(self._max_vcpus[i])}"
            )
        self._vcpus[i] = count
        self._rates.clear()

    def vcpus(self, vm: int | str) -> tuple[int, int]:
        """(active, maximum) vCPUs of a guest."""
        i = self.index(vm)
        return int(self._vcpus[i]), int(self._max_vcpus[i])

    def set_stats_period(self, vm: int | str, period_s: float) -> None:
        """Guest stats polling period; 0 stops polling (the last report stays, ageing)."""
        i = self.index(vm)
        if not 0 <= period_s <= SECONDS_PER_DAY:  # also refuses NaN
            raise InvalidValueError("stats period", period_s, "0 (off) or a number of seconds up to a day")
        self.balloons[i] = replace(self.balloons[i], stats_period=round(period_s) or None)
        if period_s > 0:
            self._stats_period[i] = period_s
            self._stats_delay[i] = min(self.physics.stats_delay_s, period_s)
        self._reporting[i] = period_s > 0
        self._schedule_stats(np.array([i]), np.array([period_s]))

    def step(self, dt: float | None = None) -> None:
        """Advance virtual time by ``dt`` seconds (default one scenario step), in substeps of at most
        ``run.step`` so that the mechanics do not depend on how the caller slices time."""
        remaining = self._step if dt is None else float(dt)
        if not 0 <= remaining < np.inf:
            raise InvalidValueError("time step", dt, "a finite number of seconds >= 0")
        step = self._step
        substep = self._substep
        while remaining > 1e-9:
            h = step if remaining >= step else remaining
            substep(h)
            remaining -= h

    def run(self, seconds: float) -> None:
        """Advance ``seconds`` of virtual time with no controller (the balloons keep their targets)."""
        self.step(seconds)

    def demand_at(self, times: npt.ArrayLike) -> I64:
        """Trace demand (bytes) at each of ``times`` (virtual seconds), shape ``(len(times), n)``.

        This is the workload's own need, before any OOM kill: what an oracle that knows the future would
        plan for. Traces loop after ``run.duration``.
        """
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        idx = np.floor(t / self._step + 1e-9).astype(np.int64) % self._table.shape[0]
        rows: I64 = self._table[idx]
        return rows

    def snapshot(self) -> HostSnapshot:
        """The host and every guest now, as a hypervisor backend reports them."""
        h = self.scenario.host
        tu = self.physics
        available = self.host_available
        overrun = max(0, -available)
        psi = min(100.0, 100.0 * overrun / tu.psi_full_scale_bytes)
        load = float(((self._cpu_base + self._storming * tu.storm_load) * self._vcpus * ~self._paused).sum())
        guests = self._guest_snapshots(range(self.n))
        return HostSnapshot(
            time=self._time,
            wall_time=self.wall_time,
            mem_total=h.ram,
            mem_available=max(0, available),
            guests=guests,
            swap_total=h.swap,
            swap_free=h.swap,
            psi_some_avg10=psi,
            psi_full_avg10=psi / 2.0,
            load_avg1=load,
            cpu_count=h.cpus,
            hostname=h.name,
        )

    def guest_snapshot(self, vm: int | str) -> GuestSnapshot:
        """One guest now (see :meth:`snapshot`)."""
        return self._guest_snapshots([self.index(vm)])[0]

    # ----------------------------------------------------------------------------------- internals

    def _build_demand_table(self) -> I64:
        run = self.scenario.run
        times = np.arange(run.steps, dtype=np.float64) * run.step
        table = np.empty((run.steps, self.n), dtype=np.int64)
        for i, g in enumerate(self.scenario.guests):
            rng = np.random.default_rng([self.seed, i])
            table[:, i] = sample(
                g.demand, times, rng, horizon=run.duration, noise_knot_s=self.physics.noise_knot_s
            )
        return table

    def _rates_for(self, h: float) -> _Rates:
        tu = self.physics
        rates = _Rates(
            inflate=max(1, round(tu.inflate_bps * h)),
            inflate_pressure=max(1, round(tu.inflate_pressure_bps * h)),
            deflate=max(1, round(tu.deflate_bps * h)),
            cache_growth=round(tu.cache_growth_bps * h),
            oom_restart=round(tu.oom_restart_bps * h),
            thrash=tu.thrash_fraction_per_s * h,
            base_cpu_ns=np.rint(self._cpu_base * self._vcpus * (_NS * h)).astype(np.int64),
            storm_extra_ns=np.rint(
                np.maximum(tu.storm_load - self._cpu_base, 0.0) * self._vcpus * (_NS * h)
            ).astype(np.int64),
        )
        if len(self._rates) >= _RATES_CACHE_SIZE:  # callers slicing time in odd remainders
            self._rates.clear()
        self._rates[h] = rates
        return rates

    def _new_target(self, idx: npt.NDArray[np.intp], idle: B) -> None:
        """A new target restarts the driver's work (it may then re-inflate an autodeflated balloon). An
        idle driver (at its old target) wakes up the balloon latency later; one still moving reads the
        target on each round and follows the new one at once; one already woken but not yet moving keeps
        its wake-up time (Linux's driver re-reads the target every round trip)."""
        self._hold[idx] = False
        latency = self.physics.balloon_latency_s
        if latency > 0:
            wake = idle & (self._move_at[idx] <= self._time + 1e-9)
            if wake.any():
                self._move_at[idx[wake]] = self._time + latency
                self._any_waiting = True
        self._update_movers()

    def _update_movers(self) -> None:
        """Which balloons can move: a driver that is loaded, not stuck, in a running guest; and inflate
        only when it has not deflated on OOM since the last target."""
        np.logical_and(~self._stuck, self._driver, out=self._mask)
        self._mask &= ~self._paused
        np.copyto(self._can_deflate, self._mask)
        self._mask &= ~self._hold
        np.copyto(self._can_inflate, self._mask)

    def _schedule_stats(self, idx: npt.NDArray[np.intp], first_in: npt.NDArray[np.float64]) -> None:
        """(Re)start or stop the stats of these guests: the next capture ``first_in`` seconds from now if
        they report now (capable, switched on, driver loaded, running), else never."""
        on = self._stats_capable[idx] & self._reporting[idx] & self._driver[idx] & ~self._paused[idx]
        self._next_stats[idx] = np.where(on, self._time + first_in, np.inf)
        stopped = np.zeros(self.n, dtype=np.bool_)
        stopped[idx[~on]] = True
        self._promote(stopped & (self._publish_at <= self._time + 1e-9))
        self._publish_at[stopped] = np.inf  # a report still in flight is lost
        self._next_stats_min = float(_min(self._next_stats)) if self.n else np.inf

    def _apply_events(self, t: float) -> None:
        """Apply every scenario event due by virtual time ``t``, in order."""
        while self._events and self._events[0].at <= t + 1e-9:
            self._apply(self._events.pop(0))
        self._next_event = self._events[0].at if self._events else np.inf

    def _apply(self, e: Event) -> None:
        if e.base_used is not None:
            if e.at + e.over > e.at:  # a ramp; an 'over' too small to tell apart from 0 is a jump
                self._base_ramp = (e.at, e.at + e.over, self._base_used, e.base_used)
            else:
                self._base_used, self._base_ramp = e.base_used, None
            return
        i = np.array([self.index(e.guest or "")])
        if e.requests is not None:  # nothing else changes: the driver receives or loses what comes next
            self._requests[i] = e.requests
            return
        if e.stats is not None:
            self._reporting[i] = e.stats
        if e.driver is not None:
            self._driver[i] = e.driver
        if e.paused is not None:
            np.copyto(self._intended, self._row)  # freezes at the demand it has now
            self._paused[i] = e.paused
            self._any_paused = bool(self._paused.any())
        self._update_movers()
        # A guest that starts reporting sends its first report at once (the driver probes, or the
        # service starts); one that stops sends nothing more.
        self._schedule_stats(i, np.zeros(1))

    def _substep(self, h: float) -> None:
        """Advance ``h`` seconds: the host's events, the guests' demand, the balloons, then swap, cache and
        pressure, CPU time and stats, in that order (each reads what the one before left)."""
        r = self._rates.get(h) or self._rates_for(h)
        t = self._time + h
        self._advance_host(t)
        self._advance_demand(t, r)
        self._move_balloons(r)
        self._settle_after_move(r)
        self._burn_cpu(r)
        self._time = t
        if t >= self._next_stats_min - 1e-9:
            self._refresh_stats()

    def _advance_host(self, t: float) -> None:
        """The scenario's events due by ``t``, and the host's own use along its ramp."""
        if t >= self._next_event - 1e-9:
            self._apply_events(t)
        if self._base_ramp is not None:
            t0, t1, start, end = self._base_ramp
            self._base_used = round(start + (end - start) * min(1.0, (t - t0) / (t1 - t0)))
            if t >= t1:
                self._base_ramp = None

    def _advance_demand(self, t: float, r: _Rates) -> None:
        """Demand at ``t``: the trace (frozen while a guest is paused), minus what OOM kills removed
        (which regrows as the workload restarts)."""
        row = self._table[int(t / self._step + 1e-9) % self._table.shape[0]]
        if self._any_paused:
            np.copyto(self._intended, row, where=~self._paused)
            row = self._intended
        self._row = row
        demand = self._demand
        if self._any_killed:
            np.subtract(self._killed, r.oom_restart, out=self._killed)
            np.maximum(self._killed, 0, out=self._killed)
            np.subtract(row, self._killed, out=demand)
            np.maximum(demand, 0, out=demand)
            self._any_killed = bool(_any(self._killed))
        else:
            np.copyto(demand, row)

    def _move_balloons(self, r: _Rates) -> None:
        """Each balloon one substep toward its target: deflate fast; inflate fast out of free and cache
        memory, slowly when it means swapping (a new target waits for the driver's latency)."""
        actual, demand, room, need, up, slack = (
            self._actual,
            self._demand,
            self._room,
            self._need,
            self._up,
            self._slack,
        )
        np.subtract(actual, self._reserved, out=room)
        np.subtract(actual, self._target, out=need)  # > 0: the balloon must inflate by this much
        np.negative(need, out=up)
        np.maximum(up, 0, out=up)
        np.minimum(up, r.deflate, out=up)
        up *= self._can_deflate
        np.subtract(room, demand, out=slack)
        np.maximum(slack, r.inflate_pressure, out=slack)
        np.minimum(slack, r.inflate, out=slack)
        np.minimum(need, slack, out=need)
        # The balloon only gets pages the guest can free: never kernel memory or pinned page cache, never
        # more anonymous memory than swap can hold (allocation fails, "Out of puff!"). It can take the
        # free pages of the min watermark, though, next to anonymous memory that cannot go to swap: the
        # guest's next allocation then finds none, and the OOM killer fires.
        tmp = self._tmp
        np.subtract(demand, self._swap_size, out=tmp)
        np.maximum(tmp, 0, out=tmp)
        np.subtract(room, tmp, out=slack)
        np.minimum(tmp, self._min_free, out=tmp)
        slack += tmp
        np.minimum(need, slack, out=need)
        np.maximum(need, 0, out=need)
        need *= self._can_inflate
        if self._any_waiting:  # a new target had not reached the driver when this substep began
            np.greater(self._move_at, self._time + 1e-9, out=self._mask)
            up[self._mask] = 0
            need[self._mask] = 0
            self._any_waiting = bool(_any(self._mask))
        actual += up
        actual -= need
        room += up
        room -= need

    def _burn_cpu(self, r: _Rates) -> None:
        """CPU time: the baseline load, and a storm on every vCPU while a storm guest's balloon is inflated;
        none while paused."""
        if self._any_paused:
            self._cpu_ns += r.base_cpu_ns * ~self._paused
        else:
            self._cpu_ns += r.base_cpu_ns
        if self._any_storm:
            np.less(self._actual, self._storm_below, out=self._storming)
            self._storming &= self._storm
            self._storming &= ~self._paused
            self._cpu_ns += r.storm_extra_ns * self._storming

    def _settle(self) -> None:
        """Bring swap, cache and pressure in line with the initial state (no time passes)."""
        np.subtract(self._actual, self._reserved, out=self._room)
        self._settle_after_move(None)

    def _settle_after_move(self, r: _Rates | None) -> None:
        demand, room, deficit, swap = self._demand, self._room, self._deficit, self._swap_used
        # Anonymous memory that does not fit goes to swap; beyond swap, autodeflate or OOM.
        np.subtract(demand, room, out=deficit)
        np.greater(deficit, self._swap_size, out=self._mask)
        if _any(self._mask):
            self._out_of_memory()
        np.greater(deficit, 0, out=self._pressure)
        if self._any_swap or _any(self._pressure):
            self._swap(r)

        # Page cache grows into free memory (down to the min watermark) and is reclaimed at once when
        # memory is needed.
        tmp, cache = self._tmp, self._cache
        np.subtract(demand, swap, out=tmp)  # resident anonymous
        np.subtract(room, tmp, out=tmp)
        tmp += self.physics.cache_min_bytes
        if r is not None:
            cache += r.cache_growth
        np.minimum(cache, tmp, out=cache)
        np.maximum(cache, self.physics.cache_min_bytes, out=cache)

    def _out_of_memory(self) -> None:
        """Demand beyond memory + swap: autodeflate guests take balloon pages back, others OOM-kill."""
        actual, demand, room, deficit = self._actual, self._demand, self._room, self._deficit
        over = np.maximum(deficit - self._swap_size, 0)
        # The OOM notifier is the driver's: a stuck, unloaded or paused driver gives nothing back.
        grow = np.where(self._autodeflate & (self._can_deflate > 0), np.minimum(over, self._max - actual), 0)
        if grow.any():
            actual += grow
            room += grow
            deficit -= grow
            self._hold |= grow > 0
            self._can_inflate[self._hold] = 0
        kill = deficit > self._swap_size
        if kill.any():
            idx = np.flatnonzero(kill)
            overflow = deficit[idx] - self._swap_size[idx]
            rest = np.rint((demand[idx] - overflow) * self.physics.oom_kill_fraction).astype(np.int64)
            amount = overflow + rest
            self._oom_kills[idx] += 1
            self._killed[idx] += amount
            demand[idx] -= amount
            deficit[idx] -= amount
            self._any_killed = True

    def _swap(self, r: _Rates | None) -> None:
        swap, ftmp = self._swap_used, self._ftmp
        new = self._new_swap
        np.maximum(self._deficit, 0, out=new)
        np.minimum(new, self._swap_size, out=new)
        np.subtract(new, swap, out=self._tmp)  # change in swapped memory
        np.maximum(self._tmp, 0, out=ftmp, casting="unsafe")
        self._swap_out += ftmp
        np.minimum(self._tmp, 0, out=ftmp, casting="unsafe")
        self._swap_in -= ftmp
        if r is not None:
            np.multiply(new, r.thrash, out=ftmp)
            self._swap_in += ftmp
            self._swap_out += ftmp  # thrashing pages go out again as they come in
        np.copyto(swap, new)
        self._any_swap = bool(_any(new))

    def _refresh_stats(self) -> None:
        """Capture the guests whose polling period came due; the report each replaces is published by
        now (the delay is at most a period), so it becomes the one a reader sees until the new one is."""
        now = self._time
        due = self._due
        np.less_equal(self._next_stats, now + 1e-9, out=due)
        self._promote(due)
        self._capture(due)
        np.copyto(self._publish_at, now + self._stats_delay, where=due)
        np.add(self._next_stats, self._stats_period, out=self._next_stats, where=due)
        self._next_stats_min = float(_min(self._next_stats))

    def _promote(self, which: B) -> None:
        """The captured reports of ``which`` (published by now) become the last published ones."""
        which = which & (self._publish_at < np.inf)
        np.copyto(self._published, self._captured, where=which)
        np.copyto(self._st_last, self.physics.epoch + self._publish_at, where=which)

    def _reports(self) -> tuple[I64, F64]:
        """The reports a reader sees now, and their stamps: a capture once its delay has passed."""
        ready = self._publish_at <= self._time + 1e-9
        values = np.where(ready, self._captured, self._published)
        stamps = np.where(ready, self.physics.epoch + self._publish_at, self._st_last)
        return values, stamps

    def _capture(self, due: B) -> None:
        """What a guest's driver reads from its own kernel at this moment, for the guests in ``due``."""
        total, avail, free, caches, swap_in, swap_out, majflt, oom = self._captured
        tmp, ftmp = self._tmp, self._ftmp
        np.logical_and(due, self._reports_max, out=self._due_max)
        np.copyto(total, self._actual, where=due)
        np.copyto(total, self._max, where=self._due_max)
        np.subtract(self._demand, self._swap_used, out=tmp)  # resident anonymous
        np.subtract(self._actual, tmp, out=tmp)
        tmp -= self._kernel
        tmp -= self._cache  # free
        np.copyto(free, tmp, where=due)
        tmp += self._cache  # available: free + page cache (counting the pinned part: MemAvailable does)
        np.copyto(avail, tmp, where=due)
        np.copyto(caches, self._cache, where=due)
        np.copyto(swap_in, self._swap_in, where=due, casting="unsafe")
        np.copyto(swap_out, self._swap_out, where=due, casting="unsafe")
        np.divide(self._swap_in, self.physics.page_size, out=ftmp)
        np.copyto(majflt, ftmp, where=due, casting="unsafe")
        np.copyto(oom, self._oom_kills, where=due)

    def _guest_snapshots(self, indices: range | list[int]) -> tuple[GuestSnapshot, ...]:
        """Build snapshots from whole-array ``tolist`` reads: a snapshot of 100 guests every policy tick
        must stay far cheaper than the simulation itself. Stats objects are reused until the next report."""
        values, stamps = self._reports()
        last = stamps.tolist()
        st_total, st_avail, st_free, st_caches, st_swap_in, st_swap_out, st_majflt, st_oom = values.tolist()
        mx, tg, ac, vc, mv, cpu = (
            a.tolist()
            for a in (self._max, self._asked, self._actual, self._vcpus, self._max_vcpus, self._cpu_ns)
        )
        paused = self._paused.tolist()
        out = []
        for i in indices:
            stats = self._stats_cache[i]
            if last[i] > 0 and stats.last_update != last[i]:
                stats = GuestStats(
                    total=st_total[i],
                    available=st_avail[i],
                    free=st_free[i],
                    caches=st_caches[i],
                    swap_in=st_swap_in[i],
                    swap_out=st_swap_out[i],
                    major_faults=st_majflt[i],
                    oom_kills=st_oom[i],
                    last_update=last[i],
                )
                self._stats_cache[i] = stats
            out.append(
                GuestSnapshot(
                    name=self._names[i],
                    state=VMState.PAUSED if paused[i] else VMState.RUNNING,
                    max_bytes=mx[i],
                    target_bytes=tg[i],
                    actual_bytes=ac[i],
                    stats=stats,
                    balloon=self.balloons[i],
                    policy=self.policies[i],
                    vcpus=vc[i],
                    max_vcpus=mv[i],
                    cpu_time_ns=cpu[i],
                    os_type=self._os[i],
                    persistent=True,
                    uuid=self._uuids[i],
                )
            )
        return tuple(out)


def _zeros(n: int) -> I64:
    return np.zeros(n, dtype=np.int64)


def _default_kernel(max_bytes: int, tu: Physics) -> int:
    return min(max_bytes // 2, tu.kernel_base_bytes + round(max_bytes * tu.kernel_max_fraction))
