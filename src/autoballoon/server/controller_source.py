"""The real controller as a :class:`~autoballoon.server.source.Source`.

Wire :meth:`ControllerSource.on_tick` into ``Controller.run(on_tick=...)``: after every tick it takes one
``status()`` and turns it into the server's view, so HTTP requests never call into the controller, every
tick's duration lands in the histogram exactly once, and every applied action is counted by direction
*and* reason (the controller counts them separately). Without that wiring, ``view()`` refreshes itself at
most once per ``view_ttl_s`` and a tick it did not see is counted at the mean duration of recent ticks.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from autoballoon.controller import Controller, ControllerStatus
from autoballoon.errors import BackendError, UnknownVMError
from autoballoon.journal import JournalEntry
from autoballoon.model import GuestPolicy
from autoballoon.server.source import ServerView, TickStats
from autoballoon.server.tunables import ServerTunables


def config_json(controller: Controller) -> dict[str, Any]:
    """The effective configuration: every tunable, the defaults and per-VM policies, where they came from."""
    cfg = controller.config
    return {
        "source": cfg.source,
        "interval_s": cfg.interval_s,
        "dry_run": controller.dry_run,
        "journal_path": cfg.journal_path,
        "on_exit": cfg.on_exit,
        "restore_to": cfg.restore_to,
        "tunables": dataclasses.asdict(cfg.tunables),
        "defaults": cfg.defaults.to_json(),
        "vms": {name: p.to_json() for name, p in cfg.exact.items()},
        "globs": [{"pattern": pattern, "policy": p.to_json()} for pattern, p in cfg.globs],
    }


class _Histogram:
    """Cumulative tick-duration buckets (not thread-safe on its own: the source's lock guards it)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum_s = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        index = bisect.bisect_left(self.bounds, seconds)
        if index < len(self.counts):
            self.counts[index] += times
        self.count += times
        self.sum_s += seconds * times

    def stats(self, last_s: float | None) -> TickStats:
        running = 0
        cumulative = []
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return TickStats(count=self.count, sum_s=self.sum_s, buckets=tuple(cumulative), last_s=last_s)


class ControllerSource:
    """Adapts :class:`~autoballoon.controller.Controller` to what the server reads and submits."""

    def __init__(self, controller: Controller, tunables: ServerTunables) -> None:
        self._controller = controller
        self._tun = tunables
        self._lock = threading.Lock()
        self._ticked = threading.Condition(self._lock)
        self._hist = _Histogram(tunables.tick_buckets_s)
        self._ticks_seen = 0
        self._seq = 0
        #: Journal entries already numbered, by identity, with their numbered copy; holding the entry keeps
        #: its id from being reused, and reusing the copy spares rebuilding the whole ring every tick.
        self._numbered: dict[int, tuple[JournalEntry, Mapping[str, Any]]] = {}
        self._actions: Counter[tuple[str, str]] = Counter()
        self._config = config_json(controller)
        self._view = ServerView(uri=controller.uri, config=self._config)
        self._fresh_at = float("-inf")
        self._last_tick_at: float | None = None
        self._wired = False

    # -- reading ----------------------------------------------------------------------------------------

    def on_tick(self, controller: Controller | None = None) -> None:
        """Call after every tick (``Controller.run(on_tick=...)``): refreshes the view from that tick."""
        self._wired = True
        self._refresh()

    def view(self) -> ServerView:
        if not self._wired and time.monotonic() - self._fresh_at >= self._tun.view_ttl_s:
            self._refresh()
        return self._view

    def _refresh(self) -> None:
        status = self._controller.status(journal_entries=self._tun.journal_entries)
        with self._lock:
            self._observe_ticks(status)
            events = self._number(status.journal)
            self._view = self._build(status, events)
            self._fresh_at = time.monotonic()
            self._ticked.notify_all()

    def _observe_ticks(self, status: ControllerStatus) -> None:
        new = status.ticks - self._ticks_seen
        if new > 0:
            self._last_tick_at = time.time()
        if new > 0 and status.tick.last_s is not None:
            self._hist.observe(status.tick.last_s)
            if new > 1 and status.tick.mean_s is not None:
                self._hist.observe(status.tick.mean_s, new - 1)
        self._ticks_seen = max(self._ticks_seen, status.ticks)

    def _number(self, journal: tuple[JournalEntry, ...]) -> tuple[Mapping[str, Any], ...]:
        """Give each journal entry a ``seq`` that never changes (the cursor of ``/events`` paging)."""
        current = {id(e) for e in journal}
        for key in [k for k in self._numbered if k not in current]:
            del self._numbered[key]
        out = []
        for entry in journal:
            known = self._numbered.get(id(entry))
            if known is None:
                self._seq += 1
                known = self._numbered[id(entry)] = (entry, {"seq": self._seq, **entry})
                if entry.get("kind") == "action" and entry.get("applied"):
                    self._actions[(str(entry.get("direction")), str(entry.get("reason")))] += 1
            out.append(known[1])
        return tuple(out)

    def _build(self, status: ControllerStatus, events: tuple[Mapping[str, Any], ...]) -> ServerView:
        return ServerView(
            snapshot=status.snapshot,
            plan=status.plan,
            reserve_bytes=status.reserve_bytes,
            ticks=self._hist.stats(status.tick.last_s),
            actions=dict(self._actions),
            backend_errors=status.backend_errors,
            reconnects=status.reconnects,
            events=events,
            config=self._config,
            interval_s=status.interval_s,
            uri=status.uri,
            shrink_paused=status.shrink_paused,
            host_short=status.host_short,
            last_tick_at=self._last_tick_at,
        )

    # -- changes ----------------------------------------------------------------------------------------

    def _wait_for(self, after: int, match: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any] | None:
        """The first journal entry numbered after ``after`` that ``match``es, waiting up to
        ``submit_wait_s`` for the controller's next ticks; None if none came in time."""
        deadline = time.monotonic() + self._tun.submit_wait_s
        while True:
            with self._lock:
                for entry in self._view.events:
                    if entry["seq"] > after and match(entry):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self._wired:
                    self._ticked.wait(left)
                    continue
            time.sleep(min(left, self._tun.view_ttl_s))
            self._refresh()

    def submit_target(self, vm: str, target_bytes: int) -> bool:
        after = self._seq
        self._controller.submit_target(vm, target_bytes)
        entry = self._wait_for(
            after,
            lambda e: (
                e.get("vm") == vm
                and (
                    e.get("kind") == "vm-gone"
                    or (e.get("reason") == "manual" and e.get("new_target") == target_bytes)
                )
            ),
        )
        if entry is None:
            return False
        if entry.get("kind") == "vm-gone":
            raise UnknownVMError(vm)
        if not entry.get("applied"):
            raise BackendError("setting the balloon target failed", vm=vm, cause=str(entry.get("error")))
        return True

    def submit_release(self, vm: str) -> bool:
        after = self._seq
        self._controller.submit_release(vm)
        entry = self._wait_for(after, lambda e: e.get("vm") == vm and e.get("kind") == "release")
        return entry is not None

    def submit_policy(self, vm: str, changes: Mapping[str, object]) -> GuestPolicy | None:
        snap = self._view.snapshot
        guest = snap.guest(vm) if snap is not None else None
        base = guest.policy.to_json() if guest is not None else GuestPolicy().to_json()
        policy = GuestPolicy(**(base | dict(changes)))  # type: ignore[arg-type]
        after = self._seq
        self._controller.submit_policy(vm, policy, persist=True)
        entry = self._wait_for(after, lambda e: e.get("vm") == vm and e.get("kind") in ("policy", "error"))
        if entry is None:
            return None
        if entry.get("kind") == "error":
            raise BackendError("storing the policy failed", vm=vm, cause=str(entry.get("message")))
        return policy
