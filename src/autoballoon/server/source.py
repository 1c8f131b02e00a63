"""What the server needs from the daemon, and nothing more.

The server never talks to a backend: every read comes from one frozen :class:`ServerView` of the
controller's last tick, and every change goes to the controller as a request it carries out in its own
loop (so a hypervisor connection is only ever used by one thread, and a manual change is honoured the way
a ``virsh setmem`` is). Each change returns a :class:`~concurrent.futures.Future` that the loop resolves
with that change's outcome. :mod:`autoballoon.server.controller_source` adapts the real controller to this.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.registry import Collector

from autoballoon.model import GuestPolicy, HostSnapshot, Plan
from autoballoon.tunables import DEFAULT_TUNABLES

#: The quantiles of tick duration the API shows (read from the tick histogram's buckets).
TICK_QUANTILES = (0.5, 0.99)


@dataclass(frozen=True, slots=True)
class ServerView:
    """The daemon's state as the server shows it: one consistent read, safe to share between threads."""

    snapshot: HostSnapshot | None = None
    plan: Plan | None = None
    #: Host memory the controller never hands to guests.
    reserve_bytes: int | None = None
    #: Ticks run since start, the last one's duration, and the tick histogram's median and 99th
    #: percentile (estimated from its buckets as Prometheus' ``histogram_quantile`` does).
    ticks: int = 0
    last_tick_s: float | None = None
    tick_p50_s: float | None = None
    tick_p99_s: float | None = None
    #: Actions applied since start, by (direction, reason), and by (VM, direction).
    actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    vm_actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    backend_errors: int = 0
    reconnects: int = 0
    journal_errors: int = 0
    state_errors: int = 0
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
    #: Swap-in (bytes per second) at which the policy counts a guest under pressure: where the API and
    #: the dashboard call a guest "swapping".
    swap_line_bytes_per_s: float = DEFAULT_TUNABLES.swap_in_pressure_bytes_per_s


class Source(Protocol):
    """The daemon, seen from the server."""

    @property
    def tick_histogram(self) -> Collector:
        """The controller's tick-duration histogram (observed once per tick): ``/metrics`` exports it and
        the API reads its percentiles from it."""
        ...

    def view(self) -> ServerView:
        """The state after the last tick. Cheap: called for every request and every history sample."""
        ...

    def submit_target(self, vm: str, target_bytes: int) -> Future[object]:
        """Ask the controller to move ``vm``'s balloon target as an operator would with virsh.

        Already validated by the caller against the last snapshot; raises
        :class:`~autoballoon.errors.RefusedError` at once if the controller refuses it (nothing queued).
        The future resolves once the controller has carried it out, or with the
        :class:`~autoballoon.errors.AutoballoonError` that kept it from happening.
        """
        ...

    def submit_policy(self, vm: str, policy: GuestPolicy) -> Future[object]:
        """Ask the controller to store ``policy`` (already merged and validated) with ``vm``; the future
        resolves with the stored policy."""
        ...

    def submit_release(self, vm: str) -> Future[object]:
        """Ask the controller to end ``vm``'s quarantine (the health guard's); raises
        :class:`~autoballoon.errors.RefusedError` at once if the VM is not quarantined."""
        ...


def histogram_quantile(histogram: Collector, q: float) -> float | None:
    """The ``q``-quantile of ``histogram``, interpolated linearly inside the bucket that holds it
    (Prometheus' ``histogram_quantile``); None before the first observation.

    Reading the same buckets that ``/metrics`` exports keeps one measure of tick duration: the API's
    percentiles and a Prometheus query over the scrape agree.
    """
    bounds: list[tuple[float, float]] = []
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name == metric.name + "_bucket":
                bounds.append((float(sample.labels["le"]), sample.value))
    bounds.sort()
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == float("inf"):  # above the highest finite bucket: its bound is all we know
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
