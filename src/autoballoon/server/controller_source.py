"""The real controller as a :class:`~autoballoon.server.source.Source`.

Wire :meth:`ControllerSource.on_tick` into ``Controller.run(on_tick=...)``: after every tick it takes one
``status()`` and turns it into the server's view, so HTTP requests never call into the controller.
Without that wiring, ``view()`` refreshes itself at most once per ``view_ttl_s``. Changes go straight to
the controller's queue; its futures carry their outcome back.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future
from typing import Any

from prometheus_client.registry import Collector

from autoballoon.controller import Controller, ControllerStatus
from autoballoon.model import GuestPolicy
from autoballoon.server.source import CARRIED, TICK_QUANTILES, ServerView, histogram_quantile
from autoballoon.server.tunables import ServerTunables


def config_json(controller: Controller) -> dict[str, Any]:
    """The effective configuration: every tunable, the defaults and per-VM policies, where they came from.

    The paths are those the daemon writes to, not the config file's: ``--journal`` and ``--state``
    override it (and a ``sim://`` daemon keeps no state), so an operator looking for the files is sent
    to the ones in use."""
    cfg = controller.config
    journal = controller.journal.path
    return {
        "source": cfg.source,
        "interval_s": cfg.interval_s,
        "dry_run": controller.dry_run,
        "journal_path": str(journal) if journal is not None else None,
        "state_path": str(controller.store.path) if controller.store is not None else None,
        "on_exit": cfg.on_exit,
        "restore_to": cfg.restore_to,
        "tunables": dataclasses.asdict(cfg.tunables),
        "defaults": cfg.defaults.to_json(),
        "vms": {name: p.to_json() for name, p in cfg.exact.items()},
        "globs": [{"pattern": pattern, "policy": p.to_json()} for pattern, p in cfg.globs],
    }


#: The status fields the server does not show, and why (every other one is carried into the view).
NOT_SHOWN = {
    "dry_run": "the configuration answer says it (config_json)",
    "connected": "the backend error and reconnect counters say it, as they do on /metrics",
    "time": "the snapshot's own time is shown",
    "vms": "the API builds its rows from the snapshot and the plan, as the CLI's list does",
    "budget_bytes": "the plan's budget is shown",
    "actions_by_direction": "the counts by (direction, reason) are carried and sum to these",
    "actions_by_reason": "the counts by (direction, reason) are carried and sum to these",
    "action_errors": "each failed action is a journal entry",
    "last_error": "the journal and the log say it",
}


def view_of(status: ControllerStatus, **added: Any) -> ServerView:
    """The server's view of ``status``: every field the view carries (:data:`~autoballoon.server.source.
    CARRIED`) taken from the status field of the same name, plus the values only the server adds
    (``added``: the view's fields marked ``ADDED``)."""
    return ServerView(**{name: getattr(status, name) for name in CARRIED}, **added)


class ControllerSource:
    """Adapts :class:`~autoballoon.controller.Controller` to what the server reads and submits."""

    def __init__(self, controller: Controller, tunables: ServerTunables) -> None:
        self._controller = controller
        self._tun = tunables
        self._config = config_json(controller)
        self._config_of = controller.config
        self._view = ServerView(uri=controller.uri, config=self._config)
        self._fresh_at = float("-inf")
        self._last_tick_at: float | None = None
        self._wired = False

    @property
    def tick_histogram(self) -> Collector:
        return self._controller.tick_seconds

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
        if self._controller.config is not self._config_of:  # reloaded (SIGHUP)
            self._config_of = self._controller.config
            self._config = config_json(self._controller)
        status = self._controller.status(journal_entries=self._tun.journal_entries)
        if status.ticks > self._view.ticks:
            self._last_tick_at = time.time()
        # One reference swap: readers on other threads see the old view or the new one, never a mix.
        self._view = self._build(status)
        self._fresh_at = time.monotonic()

    def _build(self, status: ControllerStatus) -> ServerView:
        p50, p99 = (histogram_quantile(self.tick_histogram, q) for q in TICK_QUANTILES)
        return view_of(
            status,
            tick_p50_s=p50,
            tick_p99_s=p99,
            config=self._config,
            last_tick_at=self._last_tick_at,
            swap_line_bytes_per_s=self._controller.config.tunables.swap_in_pressure_bytes_per_s,
        )

    # -- changes ----------------------------------------------------------------------------------------

    def submit_target(self, vm: str, target_bytes: int, *, force: bool = False) -> Future[object]:
        return self._controller.submit_target(vm, target_bytes, force=force)

    def submit_policy(self, vm: str, policy: GuestPolicy) -> Future[object]:
        return self._controller.submit_policy(vm, policy, persist=True)

    def submit_release(self, vm: str) -> Future[object]:
        return self._controller.submit_release(vm)
