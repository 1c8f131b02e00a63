"""Prometheus ``/metrics``: a custom collector that reads the controller's last tick at scrape time.

Nothing is copied into prometheus-client's own metric objects between scrapes: each scrape builds the
families from one :class:`~autoballoon.server.source.ServerView`, so a scrape costs nothing when nobody
scrapes and always shows one consistent tick. Names follow the Prometheus conventions: base units
(bytes, seconds, ratios), ``_total`` for counters.

Every family carries a ``host`` label (and ``vm`` where it is about one VM) so that a fleet of daemons
aggregates with a plain ``sum by (host)`` whatever a scrape config names its targets: ``instance`` is an
address and port, and one machine may run several daemons (one per hypervisor URI, or simulated hosts),
while ``host`` is the name the hypervisor gives itself. The fleet rules and alerts built on these names
are in ``contrib/prometheus/``.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from autoballoon import __version__
from autoballoon.model import GuestSnapshot, HostSnapshot, Status
from autoballoon.server.history import History, Point
from autoballoon.server.source import ServerView
from autoballoon.text import printable

#: Every state a VM can be reported in; always exported (0 or 1) so that alerts can match on them.
VM_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
PERCENT = 100.0
NS_PER_S = 1e9
HOST = "host"
VM = "vm"
#: The label telling how a reclaimed figure was measured (see :data:`RECLAIM_MEASURES`).
MEASURE = "measure"


def reclaimed_by_balloon(guest: GuestSnapshot) -> int | None:
    """What the balloon holds back from a running guest: ``max - actual``.

    A balloon that never answered (``actual`` unknown) is counted as holding nothing, because nothing
    shows that it does; so this measure is known for every running VM and its host sum is complete.
    """
    if guest.actual_bytes is None:
        return 0
    return max(0, guest.max_bytes - guest.actual_bytes)


def reclaimed_at_host(guest: GuestSnapshot) -> int | None:
    """What the host really holds back from a running guest: ``max - RSS of its QEMU process``.

    Lower than the balloon's figure where an inflated balloon frees nothing at the host (VFIO, huge
    pages), higher where free page reporting hands back pages the balloon never took, and where the
    guest never touched its memory at all. Unknown (None) where the backend cannot see the process.
    """
    if guest.host_rss_bytes is None:
        return None
    return max(0, guest.max_bytes - guest.host_rss_bytes)


#: How "reclaimed" is measured, as ``(measure label, per-VM figure or None where unknown)``. The balloon
#: is what autoballoon moves; what the host really got back is each QEMU process's resident memory
#: (lower still with free page reporting). The rules in ``contrib/prometheus/`` keep the label, and
#: dashboards show each measure as its own series.
RECLAIM_MEASURES: tuple[tuple[str, Callable[[GuestSnapshot], int | None]], ...] = (
    ("balloon", reclaimed_by_balloon),
    ("host_rss", reclaimed_at_host),
)


def host_name(view: ServerView) -> str | None:
    """The ``host`` label: the name the hypervisor gives itself in the snapshot, else this machine's name;
    None before the first snapshot."""
    snap = view.snapshot
    if snap is None:
        return None
    return snap.hostname or socket.gethostname()


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=[HOST, *labels])


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=[HOST, *labels])


#: A per-VM value: from the guest, the snapshot's wall time and the guest's latest history point (None
#: until the sampler has seen it twice); None is no sample (not reported, or not known).
GuestValue = Callable[[GuestSnapshot, float, Point | None], float | None]


@dataclass(frozen=True, slots=True)
class PerGuest:
    """A per-VM family with at most one sample per guest."""

    name: str
    doc: str
    value: GuestValue
    counter: bool = False

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        return (_counter if self.counter else _gauge)(self.name, self.doc, [VM])


#: The per-VM families of one sample per guest, in the order they are exported.
PER_GUEST: tuple[PerGuest, ...] = (
    PerGuest(
        "autoballoon_vm_max_bytes",
        "The VM's <memory>: the most it can ever have.",
        lambda g, w, p: g.max_bytes,
    ),
    PerGuest(
        "autoballoon_vm_target_bytes",
        "The VM's balloon target (<currentMemory>).",
        lambda g, w, p: g.target_bytes,
    ),
    PerGuest(
        "autoballoon_vm_actual_bytes",
        "Memory the guest has now (balloon actual).",
        lambda g, w, p: g.actual_bytes,
    ),
    PerGuest(
        "autoballoon_vm_guest_used_bytes",
        "Memory the guest uses (MemTotal - MemAvailable).",
        lambda g, w, p: g.used_bytes,
    ),
    PerGuest(
        "autoballoon_vm_guest_available_bytes", "The guest's MemAvailable.", lambda g, w, p: g.stats.available
    ),
    PerGuest(
        "autoballoon_vm_stats_age_seconds",
        "Seconds since the guest last reported stats.",
        lambda g, w, p: g.stats_age(w),
    ),
    PerGuest(
        "autoballoon_vm_swap_in_bytes",
        "Bytes the guest swapped in since it booted.",
        lambda g, w, p: g.stats.swap_in,
        counter=True,
    ),
    PerGuest(
        "autoballoon_vm_major_faults",
        "Major page faults in the guest since it booted.",
        lambda g, w, p: g.stats.major_faults,
        counter=True,
    ),
    PerGuest(
        "autoballoon_vm_oom_kills",
        "Processes the guest's OOM killer ended since it booted (guest stats; newer QEMU and Linux only).",
        lambda g, w, p: g.stats.oom_kills,
        counter=True,
    ),
    PerGuest(  # the latest rates seen, even if the sampler is a tick behind
        "autoballoon_vm_swap_in_bytes_per_second",
        "Swap-in rate over the last two ticks seen.",
        lambda g, w, p: p.swap_in_bps if p is not None else None,
    ),
    PerGuest(
        "autoballoon_vm_major_faults_per_second",
        "Major fault rate over the last two ticks seen.",
        lambda g, w, p: p.major_faults_ps if p is not None else None,
    ),
    PerGuest(
        "autoballoon_vm_host_rss_bytes",
        "Resident memory of the VM's QEMU process on the host (VmRSS): what the VM really costs the host.",
        lambda g, w, p: g.host_rss_bytes if g.state.active else None,
    ),
    PerGuest(
        "autoballoon_vm_cpu_seconds",
        "CPU time the guest used over all its vCPUs since it started (what the health guard watches).",
        lambda g, w, p: g.cpu_time_ns / NS_PER_S if g.cpu_time_ns is not None else None,
        counter=True,
    ),
)


def vm_families(view: ServerView, history: History | None, host: str) -> list[Metric]:
    """Per-VM gauges and counters from the last snapshot (empty before the first tick)."""
    snap = view.snapshot
    simple = [(spec, spec.family()) for spec in PER_GUEST]
    g_reclaimed = _gauge(
        "autoballoon_vm_reclaimed_bytes",
        "Memory a running VM could hold at its max but does not, by how it is measured.",
        [VM, MEASURE],
    )
    g_status = _gauge(
        "autoballoon_vm_status",
        "1 for the state the controller puts the VM in, 0 for the others.",
        [VM, "status"],
    )
    c_actions = _counter(
        "autoballoon_vm_actions",
        "Balloon changes applied to the VM since the daemon started.",
        [VM, "direction"],
    )
    for (name, direction), n in sorted(view.vm_actions.items()):
        c_actions.add_metric([host, name, direction], n)
    families: list[Metric] = [*(family for _, family in simple), g_reclaimed, g_status, c_actions]
    if snap is None:
        return families
    for g in snap.guests:
        labels = [host, g.name]
        point = history.latest(g.name) if history is not None else None
        for spec, family in simple:
            value = spec.value(g, snap.wall_time, point)
            if value is not None:
                family.add_metric(labels, value)
        if g.state.active:
            for measure, figure in RECLAIM_MEASURES:
                reclaimed = figure(g)
                if reclaimed is not None:
                    g_reclaimed.add_metric([*labels, measure], reclaimed)
        current = view.plan.status.get(g.name) if view.plan is not None else None
        states = VM_STATUSES if current in VM_STATUSES or current is None else (*VM_STATUSES, current)
        for s in states:
            g_status.add_metric([*labels, s], 1.0 if s == current else 0.0)
    return families


def host_reclaimed(snap: HostSnapshot) -> dict[str, int]:
    """Each measure's sum over the running VMs, for the measures known for every one of them.

    A partial sum would read as memory given back to the guests the moment one VM's figure goes missing,
    so a measure with a gap is left out of the host total (its per-VM series still show what is known).
    """
    totals: dict[str, int] = {}
    active = [g for g in snap.guests if g.state.active]
    for measure, figure in RECLAIM_MEASURES:
        values = [figure(g) for g in active]
        known = [v for v in values if v is not None]
        if len(known) == len(values):
            totals[measure] = sum(known)
    return totals


def status_counts(view: ServerView) -> dict[str, int]:
    """How many VMs are in each state (every known state, 0 included, so a ``> 0`` alert can resolve)."""
    counts = dict.fromkeys(VM_STATUSES, 0)
    if view.plan is not None and view.snapshot is not None:
        for g in view.snapshot.guests:
            current = view.plan.status.get(g.name)
            if current is not None:
                counts[current] = counts.get(current, 0) + 1
    return counts


def host_families(view: ServerView, host: str) -> list[Metric]:
    snap = view.snapshot
    out: list[Metric] = []

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            fam = _gauge(name, doc)
            fam.add_metric([host], value)
            out.append(fam)

    if snap is not None:
        gauge("autoballoon_host_memory_total_bytes", "Host RAM.", snap.mem_total)
        gauge("autoballoon_host_memory_available_bytes", "Host MemAvailable.", snap.mem_available)
        gauge("autoballoon_host_vms_max_bytes", "Sum of running VMs' <memory>.", snap.sum_max)
        gauge("autoballoon_host_vms_target_bytes", "Sum of running VMs' balloon targets.", snap.sum_target)
        gauge("autoballoon_host_vms_actual_bytes", "Sum of running VMs' actual memory.", snap.sum_actual)
        gauge(
            "autoballoon_host_overcommit_ratio",
            "Sum of running VMs' <memory> over host RAM.",
            snap.overcommit_ratio,
        )
        for kind, value in (("some", snap.psi_some_avg10), ("full", snap.psi_full_avg10)):
            gauge(
                f"autoballoon_host_memory_pressure_{kind}_ratio",
                f"Share of time {kind} tasks stalled on memory over the last 10 s (PSI avg10).",
                None if value is None else value / PERCENT,
            )
        gauge("autoballoon_host_ksm_saved_bytes", "Memory KSM saves by merging pages.", snap.ksm_saved_bytes)
        reclaimed = _gauge(
            "autoballoon_host_reclaimed_bytes",
            "Memory the running VMs could hold at their max but do not, summed, by how it is measured.",
            [MEASURE],
        )
        for measure, total in host_reclaimed(snap).items():
            reclaimed.add_metric([host, measure], total)
        out.append(reclaimed)
    if view.plan is not None:
        gauge(
            "autoballoon_host_short",
            "1 when the last decision could not give every guest what it wants within the budget, else 0.",
            1.0 if view.host_short else 0.0,
        )
        gauge(
            "autoballoon_host_reserve_spent_bytes",
            "Bytes of the host's reserve the last decision spent to keep guests at their OOM floors.",
            view.reserve_spent_bytes,
        )
        vms = _gauge(
            "autoballoon_host_vms", "VMs on the host in each state the controller gives.", ["status"]
        )
        for status, n in status_counts(view).items():
            vms.add_metric([host, status], n)
        out.append(vms)
    gauge(
        "autoballoon_host_budget_bytes",
        "Memory the last decision could hand to guests.",
        view.plan.budget if view.plan is not None else None,
    )
    gauge("autoballoon_host_reserve_bytes", "Host memory never handed to guests.", view.reserve_bytes)
    gauge(
        "autoballoon_host_shrink_paused",
        "1 while the health guard holds every shrink (host load or CPU thermal throttling), else 0.",
        1.0 if view.shrink_paused else 0.0,
    )
    return out


def _with_host(family: Metric, host: str) -> Metric:
    """``family`` with ``host`` added to every sample: a histogram handed in from elsewhere keeps its own
    buckets and gains the label every autoballoon family has."""
    out = Metric(family.name, family.documentation, family.type, family.unit)
    for s in family.samples:
        out.add_sample(s.name, {HOST: host, **s.labels}, s.value, s.timestamp, s.exemplar)
    return out


def tick_families(view: ServerView, host: str, tick_histogram: Collector | None) -> Iterator[Metric]:
    """The tick-duration histogram, and when the last tick ended and how often ticks are due.

    The timestamp and the interval let an alert say "no tick for three intervals" on any host, whatever
    its ``--interval``, which Prometheus's own ``up`` cannot: a daemon that serves HTTP while its loop is
    wedged still scrapes fine.
    """
    if tick_histogram is not None:
        for family in tick_histogram.collect():
            yield _with_host(family, host)
    for name, doc, value in (
        (
            "autoballoon_last_tick_timestamp_seconds",
            "Unix time (real clock) when the controller's last tick ended.",
            view.last_tick_at,
        ),
        ("autoballoon_tick_interval_seconds", "Seconds the controller waits between ticks.", view.interval_s),
    ):
        if value is not None:
            fam = _gauge(name, doc)
            fam.add_metric([host], value)
            yield fam


def build_family(host: str) -> Metric:
    """``autoballoon_build_info``: 1, labelled with the version and the Python it runs on (a fleet
    dashboard shows which hosts run which release)."""
    info = _gauge("autoballoon_build_info", "The daemon's version and Python.", ["version", "python"])
    info.add_metric([host, __version__, platform.python_version()], 1.0)
    return info


def controller_families(view: ServerView, host: str) -> list[Metric]:
    actions = _counter(
        "autoballoon_actions", "Balloon changes applied, by direction and reason.", ["direction", "reason"]
    )
    for (direction, reason), n in sorted(view.actions.items()):
        actions.add_metric([host, direction, reason], n)
    errors = _counter("autoballoon_backend_errors", "Failed calls to the hypervisor.")
    errors.add_metric([host], view.backend_errors)
    reconnects = _counter("autoballoon_backend_reconnects", "Reconnections to the hypervisor.")
    reconnects.add_metric([host], view.reconnects)
    journal = _counter(
        "autoballoon_journal_errors", "Journal lines that could not be written; the daemon balloons on."
    )
    journal.add_metric([host], view.journal_errors)
    state = _counter("autoballoon_state_errors", "Saves of the restart state that failed (tried again).")
    state.add_metric([host], view.state_errors)
    return [actions, errors, reconnects, journal, state, build_family(host)]


class ControllerCollector(Collector):
    """Builds every autoballoon family from the current view, once per scrape."""

    def __init__(
        self,
        view: Callable[[], ServerView],
        history: History | None = None,
        *,
        host: str | None = None,
        tick_histogram: Collector | None = None,
    ) -> None:
        self._view = view
        self._history = history
        self._host = host
        self._tick_histogram = tick_histogram
        # What the default registry would have: the daemon's own process (CPU, resident memory, open
        # files, start time), the Python platform and its garbage collector; with the host label too.
        # (GCCollector insists on registering somewhere: a scratch registry, never scraped itself.)
        scratch = CollectorRegistry(auto_describe=False)
        self._standard: tuple[Collector, ...] = (
            ProcessCollector(registry=scratch),
            PlatformCollector(registry=scratch),
            GCCollector(registry=scratch),
        )

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        host = self._host or host_name(view)
        if host is None:
            # Before the first snapshot the hypervisor has not named itself: series labelled with a guess
            # would start a second, orphaned series per metric once the name is known.
            return
        self._host = self._host or host  # keep one name for the daemon's life, as the series do
        for family in (
            *vm_families(view, self._history, host),
            *host_families(view, host),
            *tick_families(view, host, self._tick_histogram),
            *controller_families(view, host),
        ):
            yield _printable_labels(family)
        for collector in self._standard:
            for family in collector.collect():
                yield _with_host(family, host)


def _printable_labels(family: Metric) -> Metric:
    """``family`` with every label value escaped as the CLI escapes names: the exposition format escapes
    only backslash, quote and newline, so a VM named with terminal escapes would reach, raw, the
    terminal of whoever reads ``curl /metrics``."""
    for i, sample in enumerate(family.samples):
        labels = sample.labels
        if not all(v.isprintable() for v in labels.values()):
            family.samples[i] = sample._replace(labels={k: printable(v) for k, v in labels.items()})
    return family


def make_registry(
    view: Callable[[], ServerView],
    history: History | None = None,
    *,
    host: str | None = None,
    tick_histogram: Collector | None = None,
) -> CollectorRegistry:
    """A registry with autoballoon's families and the process, platform and GC collectors, all labelled
    with ``host`` (its own registry, not the global default one: tests run many servers in one process).

    ``view`` is read once per scrape. ``host`` names the host in every series; by default the name the
    hypervisor gives in the first snapshot (nothing is exported before it), falling back to this
    machine's name when the hypervisor gives none. ``tick_histogram`` is any collector that yields the
    ``autoballoon_tick_duration_seconds`` histogram (a ``prometheus_client.Histogram`` built with
    ``registry=None``, observed once per tick); ``host`` is added to its samples. Without it there is no
    tick histogram.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(view, history, host=host, tick_histogram=tick_histogram))
    return registry
