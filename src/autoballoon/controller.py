"""The only loop: collect → decide → act → record, at a fixed interval, surviving a flaky hypervisor.

Everything that decides is pure (:mod:`autoballoon.policy`, :mod:`autoballoon.health`); this module is
the imperative shell around it. One tick: take a snapshot; let the health guard observe it; hand the
snapshot, the guard's state and each VM's effective policy to the policy's ``decide``; apply the plan's
actions as they are (or only journal them in a dry run) and journal its events. The controller owns the
backend connection (reconnecting with back-off), keeps counters, and publishes a frozen
:class:`ControllerStatus` that other threads (the HTTP server, a live table) may read at any time.
Other threads never call the backend themselves: an operator's request (:meth:`Controller.submit_target`,
:meth:`~Controller.submit_policy`, :meth:`~Controller.submit_release`) is queued and carried out by the
loop's own thread at the start of its next tick, so that a backend which is not thread-safe (the
simulator) stays safe. Each request gets its own :class:`concurrent.futures.Future`, resolved by the loop
with that request's outcome, as a QMP client gets its own reply to each command: nobody has to search the
journal to learn what became of a request, and a request is never lost (one interrupted by a lost
connection goes back to the head of the queue and is resolved after the reconnect).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType

from prometheus_client import Histogram

from autoballoon import health, reasons, safety, saved
from autoballoon.backends.base import Backend
from autoballoon.clock import Clock
from autoballoon.config import DaemonConfig
from autoballoon.errors import (
    AutoballoonError,
    BackendError,
    ConnectionLostError,
    RefusedError,
    UnknownVMError,
)
from autoballoon.journal import Journal, JournalEntry
from autoballoon.model import (
    Action,
    BalloonChange,
    Event,
    GuestDecision,
    GuestPolicy,
    GuestSnapshot,
    HostSnapshot,
    Plan,
    Status,
)
from autoballoon.policy import DefaultPolicy, Policy, tick
from autoballoon.state import StateStore
from autoballoon.text import printable
from autoballoon.tunables import Tunables

#: Statuses of VMs that autoballoon has been ballooning (and so restores on exit).
_RESTORABLE = (Status.MANAGED, Status.STUCK, Status.NO_STATS, Status.MANUAL_HOLD)

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the tick-duration histogram's buckets: a tick is a bulk read, a pure decision
#: and a few balloon calls, from a millisecond (the simulator) to seconds (a slow libvirt).
TICK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TICK_METRIC = "autoballoon_tick_duration_seconds"


def tune_collector(t: Tunables) -> None:
    """Set the daemon's garbage-collector threshold for its youngest generation (see
    :attr:`Tunables.collector_young_threshold`): process-wide, so only the daemon's entry point and the
    policy bench call it, not the controller a test or an evaluation builds."""
    _young, *older = gc.get_threshold()
    gc.set_threshold(t.collector_young_threshold, *older)


@dataclass(frozen=True, slots=True)
class VMStatus:
    """One VM as the controller last saw and judged it."""

    name: str
    status: str
    reason: str
    max_bytes: int
    target_bytes: int
    actual_bytes: int | None
    used_bytes: int | None
    demand_bytes: int | None
    want_bytes: int | None
    floor_bytes: int | None
    ceiling_bytes: int | None
    pressure: bool
    autodeflate: bool
    start_target_bytes: int | None


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    """A consistent, read-only picture of the daemon for the API, metrics and dashboard."""

    uri: str
    dry_run: bool
    connected: bool
    interval_s: float
    ticks: int
    time: float | None  # controller clock at the last snapshot
    snapshot: HostSnapshot | None
    plan: Plan | None
    vms: tuple[VMStatus, ...]
    budget_bytes: int | None
    reserve_bytes: int | None
    host_short: bool
    #: Duration of the last tick in seconds (also observed in :attr:`Controller.tick_seconds`).
    last_tick_s: float | None
    actions_by_direction: Mapping[str, int]
    actions_by_reason: Mapping[str, int]
    action_errors: int
    backend_errors: int
    reconnects: int
    last_error: str | None
    #: Journal lines that could not be written (a full disk): the daemon balloons on regardless.
    journal_errors: int = 0
    #: Saves of the restart state that failed (they are tried again).
    state_errors: int = 0
    journal: tuple[JournalEntry, ...] = field(default=())
    #: Why the health guard holds every shrink now (host load or thermal throttling), or None.
    shrink_paused: str | None = None
    #: Actions applied since start by (direction, reason): what ``autoballoon_actions_total`` exports.
    actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: Actions applied since start by (VM, direction): ``autoballoon_vm_actions_total``.
    vm_actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: Bytes of the host's reserve the last plan spent to keep guests at their OOM floors.
    reserve_spent_bytes: int = 0


@dataclass(frozen=True, slots=True)
class _Request:
    """An operator's request waiting for the loop: what to do, and the future that carries its outcome.

    Exactly one of ``target_bytes``, ``policy`` and ``release`` says what is asked. The future is marked
    running when the request is queued, so nobody can cancel it: only the loop resolves it.
    """

    vm: str
    future: Future[object]
    target_bytes: int | None = None
    policy: GuestPolicy | None = None
    persist: bool = False
    release: bool = False


class DaemonStoppedError(AutoballoonError):
    """The daemon stopped before it carried out a queued request (nothing was changed by it)."""


class Controller:
    """The daemon's loop. ``tick()`` runs one cycle (tests); ``run(stop)`` loops until ``stop`` is set.

    ``reopen`` makes a fresh backend after a lost connection (``lambda: open_backend(uri)``); without it
    the same backend is retried after the back-off.
    """

    def __init__(
        self,
        backend: Backend | None,
        clock: Clock,
        config: DaemonConfig,
        journal: Journal,
        *,
        dry_run: bool = False,
        reopen: Callable[[], Backend] | None = None,
        uri: str | None = None,
        policy: Policy | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.config = config
        self.journal = journal
        self.dry_run = dry_run
        self.reopen = reopen
        self.uri = uri or (backend.uri if backend is not None else "")
        self.policy: Policy = policy if policy is not None else DefaultPolicy(config.tunables)
        self._state = self.policy.initial_state()
        self._health = health.HealthState()
        #: Where what must survive a restart is saved (quarantines, manual holds, learned history).
        self.store = store
        self._saved_key: object = None
        self._saved_at = float("-inf")
        self._recall()
        self._last: tuple[HostSnapshot | None, Plan | None] = (None, None)
        self._start_targets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pending: deque[_Request] = deque()
        self._runtime_policies: dict[str, GuestPolicy] = {}
        self._actions: Counter[tuple[str, str]] = Counter()
        self._vm_actions: Counter[tuple[str, str]] = Counter()
        #: The one measure of tick duration: observed once per tick, exported by ``/metrics`` (the server
        #: hands it to the metrics registry) and read back for the API's percentiles. In no registry of
        #: its own: every controller (tests run many) has its own histogram.
        self.tick_seconds = Histogram(
            TICK_METRIC,
            "Time one controller tick took (collect, decide, act, record).",
            buckets=TICK_BUCKETS_S,
            registry=None,
        )
        self._last_tick_s: float | None = None
        self._ticks = 0
        self._action_errors = 0
        self._backend_errors = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._backoff = config.tunables.reconnect_initial_s
        self._retry_at: float | None = None

    # --- the loop ------------------------------------------------------------------------------

    def tick(self) -> Plan | None:
        """One collect → decide → act → record cycle. Never raises a backend error (it is recorded)."""
        started = time.perf_counter()
        try:
            return self._tick()
        finally:
            self._last_tick_s = time.perf_counter() - started
            self.tick_seconds.observe(self._last_tick_s)
            self._ticks += 1

    def run(
        self,
        stop: threading.Event,
        *,
        on_tick: Callable[[Controller], None] | None = None,
        max_ticks: int | None = None,
    ) -> None:
        """Loop until ``stop`` is set (a signal handler sets it), then apply ``on_exit``."""
        self.journal.event(
            self.clock.wall(),
            "start",
            f"autoballoon started on {self.uri} with the {self.policy.name} policy every "
            f"{self.policy.interval_s:g} s" + (" (dry run: deciding only)" if self.dry_run else ""),
            dry_run=self.dry_run,
            config=self.config.source,
            policy=self.policy.name,
        )
        done = 0
        try:
            while not stop.is_set():
                begun = self.clock.now()
                self.tick()
                done += 1
                if on_tick is not None:
                    on_tick(self)
                if max_ticks is not None and done >= max_ticks:
                    break
                delay = self.policy.interval_s - (self.clock.now() - begun)
                if self._retry_at is not None:
                    delay = max(delay, self._retry_at - self.clock.now())
                self._sleep(delay, stop)
        finally:
            self.finish()

    def _sleep(self, seconds: float, stop: threading.Event) -> None:
        # Wakes at once on SIGTERM/SIGINT, on a real clock and on a simulated one (sleeping on a virtual
        # clock steps the simulation; at ?speed=k it also waits 1/k of the time in real seconds).
        self.clock.sleep(seconds, stop)

    def _tick(self) -> Plan | None:
        backend = self._connected()
        if backend is None:
            return None
        try:
            self._apply_pending(backend)
            snapshot = backend.snapshot()
        except BackendError as e:
            self._backend_failed(e)
            return None
        self._retry_at = None
        self._backoff = self.config.tunables.reconnect_initial_s
        for g in snapshot.guests:
            self._start_targets.setdefault(g.name, g.target_bytes)
        done = tick.step(
            self.policy,
            snapshot,
            tick.TickState(self._state, self._health),
            self.config.tunables,
            policies=self._policies(snapshot.guests),
            os_types={g.name: o for g in snapshot.guests if (o := self.config.os_for(g.name)) is not None},
            health_tunables=self.config.health,
        )
        plan, guard_events = done.plan, done.guard_events
        self._state, self._health = done.state.policy, done.state.health
        self._last = (snapshot, plan)
        wall = self.clock.wall()
        for event in (*guard_events, *plan.events):
            self._journal_event(backend, event, wall)
        try:
            for action in plan.actions:
                self._act(backend, action, wall, snapshot.mem_available, plan.guests.get(action.vm))
        except ConnectionLostError as e:
            self._backend_failed(e)
        self._save()
        return plan

    def reconfigure(self, config: DaemonConfig, policy: Policy) -> None:
        """Take a reloaded configuration (SIGHUP) from the next tick on: its tunables, defaults, per-VM
        policies and guard, and ``policy`` made from it. What the policy and the guard remember is kept
        (the same policy, only re-tuned), so a reload neither forgets a quarantine nor re-learns a
        guest. Call it from the loop's thread (``on_tick``): the loop reads the config every tick."""
        self.config = config
        self.policy = policy
        self.journal.event(
            self.clock.wall(),
            "reload",
            f"configuration reloaded from {config.source}: the {policy.name} policy every "
            f"{policy.interval_s:g} s",
            config=config.source,
        )

    # --- what survives a restart ---------------------------------------------------------------

    def _recall(self) -> None:
        """Start from what the last run saved: its quarantines, manual holds and learned history."""
        if self.store is None:
            return
        loaded = self.store.load(saved.Saved)
        if loaded is None:
            return
        now, wall = self.clock.now(), self.clock.wall()
        for vm, why in sorted(loaded.dropped.items()):
            log.warning(
                "state file %s: VM %s's saved record is out of range (%s); its history is learned again",
                self.store.path,
                printable(vm),
                printable(why),
            )
        self._health = saved.recall_health(loaded, self._health, now, wall)
        self._state = saved.recall_policy(
            loaded, self.policy.name, self._state, now, wall, self.config.tunables
        )
        held = sorted(loaded.quarantines)
        self.journal.event(
            wall,
            "recalled",
            f"state recalled from {self.store.path}: {len(loaded.guests)} guests"
            + (f", quarantined: {', '.join(held)}" if held else ""),
            quarantined=held,
        )

    def _save(self) -> None:
        """Save what must survive a restart: at once when a quarantine or a hold changed, otherwise every
        ``state_save_interval_s`` (the learned history changes slowly). A dry run saves nothing."""
        if self.store is None or self.dry_run:
            return
        now, wall = self.clock.now(), self.clock.wall()
        document = saved.remember(self.policy.name, self._health, self._state, now, wall)
        key = (
            sorted((vm, round(q.until or 0)) for vm, q in document.quarantines.items()),
            sorted(
                (vm, round(g.manual_until or 0), round(g.stuck_until or 0))
                for vm, g in document.guests.items()
            ),
        )
        if key == self._saved_key and now - self._saved_at < self.config.tunables.state_save_interval_s:
            return
        whole = saved.remember(self.policy.name, self._health, self._state, now, wall, self.config.tunables)
        if self.store.save(whole, now=wall):
            self._saved_key, self._saved_at = key, now

    def _policies(self, guests: Iterable[GuestSnapshot]) -> dict[str, GuestPolicy]:
        """Each VM's effective policy; the one place that layers the run-time overrides (set from other
        threads, hence the lock) over the config and the VM's metadata."""
        with self._lock:
            runtime = dict(self._runtime_policies)
        return {g.name: self.config.policy_for(g.name, g.policy, runtime.get(g.name)) for g in guests}

    def _journal_event(self, backend: Backend, event: Event, wall: float) -> None:
        """Journal what the policy or the guard raised; log the guard's; on a quarantine, apply the
        remedy when the config asks for it."""
        self.journal.event(wall, event.kind, event.message, vm=event.vm, **event.fields)
        if event.vm is None:
            return
        guard = self.config.health
        if event.kind == "quarantine" and guard.disable_balloon:
            note = "the running VM keeps its balloon (deflated, quarantined)"
            self._next_boot(
                backend, event.vm, BalloonChange(model="none"), health.remedy(event.vm), note, wall
            )
        if event.kind == "warning" and event.fields.get("autodeflate") is False and guard.enable_autodeflate:
            command = health.autodeflate_command(event.vm)
            note = "the running VM keeps its balloon as it is (autodeflate cannot change live)"
            self._next_boot(backend, event.vm, BalloonChange(autodeflate=True), command, note, wall)

    def _next_boot(
        self, backend: Backend, vm: str, change: BalloonChange, command: str, note: str, wall: float
    ) -> None:
        """A ``[health]`` remedy (``disable_balloon``, ``enable_autodeflate``): ``command`` applied to the
        persistent config only, never to the live VM; it takes effect at the VM's next boot."""
        if self.dry_run:
            message = f"{vm}: dry run: would apply '{command}' (persistent config, next boot)"
            self.journal.event(wall, "remedy", message, vm=vm, applied=False)
            return
        try:
            result = backend.set_balloon(vm, change)
        except (RefusedError, BackendError) as e:  # a lost connection too: the next backend call finds it
            message = f"{vm}: could not apply '{command}': {e}"
            self.journal.event(wall, "remedy", message, vm=vm, applied=False, error=str(e))
            return
        message = (
            f"{vm}: applied '{command}' to the persistent config ({result.message}); "
            f"it takes effect at the next boot, {note}"
        )
        self.journal.event(wall, "remedy", message, vm=vm, applied=True, next_boot=True)

    def _act(
        self,
        backend: Backend,
        action: Action,
        wall: float,
        host_available: int,
        decision: GuestDecision | None = None,
    ) -> None:
        """Apply the daemon's own action (the policy's, or a restore at exit); a dry run only journals it.
        ``decision`` is what the policy judged the VM by: its figures go into the journal line."""
        if self.dry_run:
            fig = reasons.figures(decision, action.old_target, action.new_target, action.reason)
            self.journal.action(wall, action, host_available=host_available, applied=False, figures=fig)
            self._count(action)
            return
        self._apply(backend, action, wall, host_available, decision)

    def _apply(
        self,
        backend: Backend,
        action: Action,
        wall: float,
        host_available: int | None,
        decision: GuestDecision | None = None,
    ) -> AutoballoonError | None:
        """Set one target and journal the outcome. A VM that vanished since the snapshot is an event,
        not an error; a lost connection propagates so the loop reconnects. Returns the error that kept
        the change from happening (an operator's request hands it to its caller), or None."""
        fig = None
        if decision is not None:
            fig = reasons.figures(decision, action.old_target, action.new_target, action.reason)
        try:
            backend.set_target(action.vm, action.new_target)
        except UnknownVMError as e:
            message = f"{action.vm}: gone before its {action.reason} change was applied ({e})"
            self.journal.event(wall, "vm-gone", message, vm=action.vm)
            return e
        except ConnectionLostError:
            raise
        except BackendError as e:
            self._action_errors += 1
            self.journal.action(
                wall, action, host_available=host_available, applied=False, error=str(e), figures=fig
            )
            return e
        self.journal.action(wall, action, host_available=host_available, applied=True, figures=fig)
        self._count(action)
        return None

    def _count(self, action: Action) -> None:
        with self._lock:
            self._actions[(action.direction, action.reason)] += 1
            self._vm_actions[(action.vm, action.direction)] += 1

    # --- the connection ------------------------------------------------------------------------

    def _connected(self) -> Backend | None:
        if self._retry_at is not None and self.clock.now() < self._retry_at:
            return None
        if self.backend is None:
            if self.reopen is None:
                return None
            try:
                self.backend = self.reopen()
            except BackendError as e:
                self._backend_failed(e)
                return None
            self._reconnects += 1
            self.journal.event(self.clock.wall(), "reconnected", f"reconnected to {self.uri}")
        return self.backend

    def _backend_failed(self, error: BackendError) -> None:
        self._backend_errors += 1
        self._last_error = str(error)
        lost = isinstance(error, ConnectionLostError)
        if lost and self.reopen is not None and self.backend is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail in any way
                self.backend.close()
            self.backend = None
        self._retry_at = self.clock.now() + self._backoff
        self.journal.event(
            self.clock.wall(),
            "backend-error",
            f"{'connection lost' if lost else 'backend error'}: {error}; retrying in {self._backoff:g} s",
        )
        self._backoff = min(self._backoff * 2, self.config.tunables.reconnect_max_s)

    # --- requests from other threads -----------------------------------------------------------

    def submit_target(self, vm: str, target_bytes: int, *, force: bool = False) -> Future[object]:
        """Ask for a manual target, honoured like ``virsh setmem`` (held for ``manual_grace_s``).

        Checked now against the last snapshot: an unknown VM, a target above max or below the floor
        raise a :class:`~autoballoon.errors.RefusedError` and nothing is queued. Otherwise the returned
        future resolves, after the loop's next tick has set it, with the target in bytes, or with the
        :class:`~autoballoon.errors.UnknownVMError` (the VM vanished meanwhile) or
        :class:`~autoballoon.errors.BackendError` (the hypervisor failed) that kept it from happening.
        """
        guest = self._known_guest(vm)
        if guest is not None:
            policy = self._policies([guest])[vm]
            safety.check_target(guest, policy, self.config.tunables, target_bytes, force=force)
        return self._queue(_Request(vm, Future(), target_bytes=target_bytes))

    def submit_policy(self, vm: str, policy: GuestPolicy | None, *, persist: bool = False) -> Future[object]:
        """Override a VM's policy from the next tick (``None`` drops the override).

        With ``persist`` the policy is also written to the VM's metadata, so that it survives a daemon
        restart and travels with the VM. The future resolves with the policy once the loop has taken it
        (and stored it), or with the error that kept the backend from storing it; the override then
        does not take effect either.
        """
        self._known_guest(vm)
        return self._queue(_Request(vm, Future(), policy=policy, persist=persist))

    def submit_release(self, vm: str) -> Future[object]:
        """End a quarantine (``autoballoon release VM``) at the next tick; refused unless quarantined.

        The future resolves with None once the loop has released the VM.
        """
        if vm not in self._health.quarantined:
            self._known_guest(vm)
            raise RefusedError(f"refused: VM {vm!r} is not quarantined; nothing was changed")
        return self._queue(_Request(vm, Future(), release=True))

    def _known_guest(self, vm: str) -> GuestSnapshot | None:
        """``vm`` in the last snapshot (None before the first one); an unknown VM is refused at once."""
        snapshot = self._last[0]
        if snapshot is None:
            return None
        guest = snapshot.guest(vm)
        if guest is None:
            raise UnknownVMError(vm, snapshot.names)
        return guest

    def _queue(self, request: _Request) -> Future[object]:
        request.future.set_running_or_notify_cancel()  # running from now on: it cannot be cancelled
        with self._lock:
            self._pending.append(request)
        return request.future

    @property
    def quarantined(self) -> Mapping[str, str]:
        """Quarantined VMs and why (any thread)."""
        return self._health.reasons()

    def _apply_pending(self, backend: Backend) -> None:
        """Carry out the queued requests in the order they came, resolving each one's future.

        A lost connection puts the interrupted request and those behind it back at the head of the queue
        (they are resolved after the reconnect) and propagates, so the loop reconnects.
        """
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        wall = self.clock.wall()
        for i, request in enumerate(batch):
            try:
                outcome = self._carry_out(backend, request, wall)
            except ConnectionLostError:
                self._requeue(batch[i:])
                raise
            except AutoballoonError as e:
                request.future.set_exception(e)
            except BaseException as e:  # a bug: this request fails with it, the ones behind it wait
                request.future.set_exception(e)
                self._requeue(batch[i + 1 :])
                raise
            else:
                request.future.set_result(outcome)

    def _requeue(self, requests: list[_Request]) -> None:
        """Put ``requests`` back at the head of the queue, in their order, ahead of newer ones."""
        with self._lock:
            self._pending.extendleft(reversed(requests))

    def _carry_out(self, backend: Backend, request: _Request, wall: float) -> object:
        """One request's effect; its result, or raises the error that kept it from happening."""
        vm = request.vm
        if request.release:
            if vm in self._health.quarantined:
                self._health = health.release(self._health, vm, self.clock.now())
                message = f"{vm}: quarantine released by the operator; ballooned again"
                self.journal.event(wall, "release", message, vm=vm)
            return None
        if request.target_bytes is None:
            return self._set_policy(backend, vm, request.policy, request.persist, wall)
        snapshot = self._last[0]
        guest = snapshot.guest(vm) if snapshot is not None else None
        old = guest.target_bytes if guest is not None else request.target_bytes
        error = self._apply(backend, Action(vm, old, request.target_bytes, "manual"), wall, None)
        if error is not None:
            raise error
        return request.target_bytes

    def _set_policy(
        self, backend: Backend, vm: str, policy: GuestPolicy | None, persist: bool, wall: float
    ) -> GuestPolicy | None:
        if policy is not None and persist:
            try:
                backend.set_policy(vm, policy)
            except ConnectionLostError:
                raise
            except (UnknownVMError, BackendError) as e:
                self.journal.event(wall, "error", f"{vm}: storing policy failed: {e}", vm=vm)
                raise
            self.journal.event(wall, "policy", f"{vm}: policy stored: {policy.to_json()}", vm=vm)
        with self._lock:
            if policy is None:
                self._runtime_policies.pop(vm, None)
            else:
                self._runtime_policies[vm] = policy
        return policy

    def _abandon_pending(self, wall: float) -> None:
        """At exit: a request the loop never reached is resolved with why, not left waiting forever."""
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
        for request in left:
            message = f"{request.vm}: the daemon stopped before carrying out an operator's request"
            self.journal.event(wall, "error", message, vm=request.vm)
            request.future.set_exception(DaemonStoppedError(message + "; nothing was changed"))

    # --- exit ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Apply ``on_exit``: "hold" leaves every target where it is; "restore" gives memory back."""
        wall = self.clock.wall()
        self._abandon_pending(wall)
        if self.config.on_exit == "restore":
            self._restore(wall)
        self.journal.event(wall, "stop", f"autoballoon stopped (on_exit={self.config.on_exit})")

    def _restore(self, wall: float) -> None:
        backend = self.backend
        snapshot: HostSnapshot | None = None
        if backend is not None:
            try:
                snapshot = backend.snapshot()
            except BackendError as e:
                self.journal.event(wall, "backend-error", f"restore: cannot read VMs: {e}")
        snapshot = snapshot or self._last[0]
        if snapshot is None or backend is None:
            self.journal.event(
                wall, "error", "restore: no connection to the hypervisor; targets left as they are"
            )
            return
        statuses = self._last[1].status if self._last[1] is not None else {}
        restorable = [g for g in snapshot.guests if statuses.get(g.name) in _RESTORABLE]
        policies = self._policies(restorable)
        for g in restorable:
            _, ceiling = safety.limits(g, policies[g.name], self.config.tunables)
            if self.config.restore_to == "start":
                goal = min(self._start_targets.get(g.name, g.max_bytes), ceiling)
            else:
                goal = ceiling
            if goal != g.target_bytes:
                self._act(
                    backend,
                    Action(
                        g.name,
                        g.target_bytes,
                        goal,
                        f"restore-{self.config.restore_to}",
                        available=g.stats.available,
                        budget=self._last[1].budget if self._last[1] is not None else None,
                    ),
                    wall,
                    snapshot.mem_available,
                )

    # --- reading -------------------------------------------------------------------------------

    def status(self, *, journal_entries: int = 100) -> ControllerStatus:
        """A frozen, consistent picture of the last tick; safe to call from any thread."""
        snapshot, plan = self._last
        vms: list[VMStatus] = []
        if snapshot is not None and plan is not None:
            for g in snapshot.guests:
                judged = plan.guests.get(g.name, GuestDecision())
                vms.append(
                    VMStatus(
                        name=g.name,
                        status=plan.status.get(g.name, ""),
                        reason=plan.status_reason.get(g.name, ""),
                        max_bytes=g.max_bytes,
                        target_bytes=g.target_bytes,
                        actual_bytes=g.actual_bytes,
                        used_bytes=g.used_bytes,
                        demand_bytes=judged.demand,
                        want_bytes=judged.want,
                        floor_bytes=judged.floor,
                        ceiling_bytes=judged.ceiling,
                        pressure=judged.pressure,
                        autodeflate=g.balloon.autodeflate,
                        start_target_bytes=self._start_targets.get(g.name),
                    )
                )
        with self._lock:
            actions = dict(self._actions)
            vm_actions = dict(self._vm_actions)
        directions: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for (direction, reason), n in actions.items():
            directions[direction] += n
            reasons[reason] += n
        return ControllerStatus(
            uri=self.uri,
            dry_run=self.dry_run,
            connected=self.backend is not None and self._retry_at is None,
            interval_s=self.policy.interval_s,
            ticks=self._ticks,
            time=snapshot.time if snapshot is not None else None,
            snapshot=snapshot,
            plan=plan,
            vms=tuple(vms),
            budget_bytes=plan.budget if plan is not None else None,
            reserve_bytes=plan.reserve if plan is not None else None,
            host_short=plan.host_short if plan is not None else False,
            last_tick_s=self._last_tick_s,
            actions_by_direction=MappingProxyType(dict(directions)),
            actions_by_reason=MappingProxyType(dict(reasons)),
            action_errors=self._action_errors,
            backend_errors=self._backend_errors,
            journal_errors=self.journal.write_errors,
            state_errors=self.store.write_errors if self.store is not None else 0,
            reconnects=self._reconnects,
            last_error=self._last_error,
            journal=self.journal.recent(journal_entries),
            shrink_paused=self._health.paused,
            actions=MappingProxyType(actions),
            vm_actions=MappingProxyType(vm_actions),
            reserve_spent_bytes=plan.reserve_spent if plan is not None else 0,
        )
