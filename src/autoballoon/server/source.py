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
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from prometheus_client.registry import Collector

from autoballoon.model import GuestPolicy, HostSnapshot, Plan
from autoballoon.tunables import DEFAULT_TUNABLES

#: The quantiles of tick duration the API shows (read from the tick histogram's buckets).
TICK_QUANTILES = (0.5, 0.99)

#: Field metadata: the server adds this value itself; the controller's status has no field of that name.
ADDED = {"added": True}
#: Field metadata: ``GET /api/v1/host`` shows this value under the field's own name.
HOST_JSON = {"host_json": True}
#: Both.
ADDED_HOST_JSON = ADDED | HOST_JSON


@dataclass(frozen=True, slots=True)
class ServerView:
    """The daemon's state as the server shows it: one consistent read, safe to share between threads.

    The controller's status carried by name: every field not marked :data:`ADDED` is the status field
    of the same name, copied by :func:`~autoballoon.server.controller_source.view_of` without a list of
    its own, and those marked :data:`HOST_JSON` are the host answer's keys (:func:`host_json`). A status
    value reaches the JSON by one declaration here, never by a copy written out field by field.
    """

    snapshot: HostSnapshot | None = None
    plan: Plan | None = None
    #: Host memory the controller never hands to guests.
    reserve_bytes: int | None = field(default=None, metadata=HOST_JSON)
    #: Ticks run since start, the last one's duration, and the tick histogram's median and 99th
    #: percentile (estimated from its buckets as Prometheus' ``histogram_quantile`` does).
    ticks: int = field(default=0, metadata=HOST_JSON)
    last_tick_s: float | None = field(default=None, metadata=HOST_JSON)
    tick_p50_s: float | None = field(default=None, metadata=ADDED_HOST_JSON)
    tick_p99_s: float | None = field(default=None, metadata=ADDED_HOST_JSON)
    #: Actions applied since start, by (direction, reason), and by (VM, direction).
    actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    vm_actions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    backend_errors: int = field(default=0, metadata=HOST_JSON)
    reconnects: int = field(default=0, metadata=HOST_JSON)
    journal_errors: int = 0
    state_errors: int = 0
    #: Recent journal entries as JSON objects, oldest first; each has an integer ``seq`` rising by entry.
    journal: tuple[Mapping[str, Any], ...] = ()
    #: The effective tunables and defaults, JSON-ready.
    config: Mapping[str, Any] = field(default_factory=dict, metadata=ADDED)
    #: Seconds between two controller ticks (for the dashboard's staleness warning).
    interval_s: float | None = field(default=None, metadata=HOST_JSON)
    uri: str = field(default="", metadata=HOST_JSON)
    #: Why the health guard holds every shrink now (host load, thermal throttling), or None.
    shrink_paused: str | None = field(default=None, metadata=HOST_JSON)
    #: The last decision could not give every guest what it wants within the budget.
    host_short: bool = field(default=False, metadata=HOST_JSON)
    #: Bytes of the host's reserve the last decision spent to keep guests at their OOM floors.
    reserve_spent_bytes: int = field(default=0, metadata=HOST_JSON)
    #: Unix time on the real clock (not the simulator's) when the last tick was seen, or None before it:
    #: what a fleet's "daemon down" alert compares with Prometheus's ``time()``.
    last_tick_at: float | None = field(default=None, metadata=ADDED)
    #: Swap-in (bytes per second) at which the policy counts a guest under pressure: where the API and
    #: the dashboard call a guest "swapping".
    swap_line_bytes_per_s: float = field(
        default=DEFAULT_TUNABLES.swap_in_pressure_bytes_per_s, metadata=ADDED
    )


#: The view's fields that are the controller status's own, by name.
CARRIED = tuple(f.name for f in fields(ServerView) if not f.metadata.get("added"))
#: The view's fields ``GET /api/v1/host`` shows, in declaration order.
HOST_FIELDS = tuple(f.name for f in fields(ServerView) if f.metadata.get("host_json"))


def host_json(view: ServerView) -> dict[str, Any]:
    """The view's part of the host answer: each :data:`HOST_JSON` field under its own name."""
    return {name: getattr(view, name) for name in HOST_FIELDS}


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

    def submit_target(self, vm: str, target_bytes: int, *, force: bool = False) -> Future[object]:
        """Ask the controller to move ``vm``'s balloon target as an operator would with virsh (``force``:
        even below what the guest uses now).

        Checked by the controller against the last snapshot (:func:`autoballoon.safety.check_target`); raises
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
