"""What the server needs from the daemon, and nothing more.

The server never talks to a backend: every read comes from one frozen :class:`ServerView` of the
controller's last tick, and every change goes to the controller as a request it carries out in its own
loop (so a hypervisor connection is only ever used by one thread, and a manual change is honoured the way
a ``virsh setmem`` is). :func:`autoballoon.server.controller_source` adapts the real controller to this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoballoon.model import GuestPolicy, HostSnapshot, Plan


@dataclass(frozen=True, slots=True)
class TickStats:
    """The controller's tick durations as a cumulative histogram (Prometheus semantics)."""

    count: int = 0
    sum_s: float = 0.0
    #: (upper bound in seconds, ticks that took at most that long), bounds rising, cumulative counts.
    buckets: tuple[tuple[float, int], ...] = ()
    last_s: float | None = None


@dataclass(frozen=True, slots=True)
class ServerView:
    """The daemon's state as the server shows it: one consistent read, safe to share between threads."""

    snapshot: HostSnapshot | None = None
    plan: Plan | None = None
    #: Host memory the controller never hands to guests.
    reserve_bytes: int | None = None
    ticks: TickStats = field(default_factory=TickStats)
    #: Actions applied since start, by (direction, reason).
    actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    backend_errors: int = 0
    reconnects: int = 0
    #: Recent journal entries as JSON objects, oldest first; each has an integer ``seq`` rising by entry.
    events: tuple[Mapping[str, Any], ...] = ()
    #: The effective tunables and defaults, JSON-ready.
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds between two controller ticks (for the dashboard's staleness warning).
    interval_s: float | None = None
    uri: str = ""
    #: Why the health guard holds every shrink now (host load, thermal throttling), or None.
    shrink_paused: str | None = None
    #: The last decision could not give every guest what it wants within the budget.
    host_short: bool = False
    #: Unix time on the real clock (not the simulator's) when the last tick was seen, or None before it:
    #: what a fleet's "daemon down" alert compares with Prometheus's ``time()``.
    last_tick_at: float | None = None


class Source(Protocol):
    """The daemon, seen from the server."""

    def view(self) -> ServerView:
        """The state after the last tick. Cheap: called for every request and every history sample."""
        ...

    def submit_target(self, vm: str, target_bytes: int) -> bool:
        """Ask the controller to move ``vm``'s balloon target as an operator would with virsh.

        Already validated by the caller against the last snapshot. Returns True once the controller has
        applied it, False if it is queued but not yet applied; raises
        :class:`~autoballoon.errors.AutoballoonError` if the controller refuses it or cannot carry it out.
        """
        ...

    def submit_policy(self, vm: str, changes: Mapping[str, object]) -> GuestPolicy | None:
        """Ask the controller to merge ``changes`` into ``vm``'s stored policy (through
        :func:`autoballoon.ops.update_policy`, which validates again against the backend); returns the
        stored policy, or None if it is queued but not yet applied."""
        ...

    def submit_release(self, vm: str) -> bool:
        """Ask the controller to end ``vm``'s quarantine (the health guard's); True once applied, False if
        queued. Raises :class:`~autoballoon.errors.RefusedError` if the VM is not quarantined. Optional:
        a source without it answers 501."""
        ...
