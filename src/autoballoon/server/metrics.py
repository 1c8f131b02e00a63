"""Prometheus ``/metrics``: a custom collector that reads the controller's last tick at scrape time.

Nothing is copied into prometheus-client's own metric objects between scrapes: each scrape builds the
families from one :class:`~autoballoon.server.source.ServerView`, so a scrape costs nothing when nobody
scrapes and always shows one consistent tick. Names follow the Prometheus conventions: base units
(bytes, seconds, ratios), ``_total`` for counters, one ``vm`` label per VM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from autoballoon.guards import Status
from autoballoon.server.history import History
from autoballoon.server.source import ServerView

#: Every state a VM can be reported in; always exported (0 or 1) so that alerts can match on them.
VM_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
PERCENT = 100.0


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def vm_families(view: ServerView, history: History | None) -> list[Metric]:
    """Per-VM gauges and counters from the last snapshot (empty before the first tick)."""
    snap = view.snapshot
    plan = view.plan
    g_max = _gauge("autoballoon_vm_max_bytes", "The VM's <memory>: the most it can ever have.", ["vm"])
    g_target = _gauge("autoballoon_vm_target_bytes", "The VM's balloon target (<currentMemory>).", ["vm"])
    g_actual = _gauge("autoballoon_vm_actual_bytes", "Memory the guest has now (balloon actual).", ["vm"])
    g_used = _gauge(
        "autoballoon_vm_guest_used_bytes", "Memory the guest uses (MemTotal - MemAvailable).", ["vm"]
    )
    g_avail = _gauge("autoballoon_vm_guest_available_bytes", "The guest's MemAvailable.", ["vm"])
    g_age = _gauge("autoballoon_vm_stats_age_seconds", "Seconds since the guest last reported stats.", ["vm"])
    c_swap = CounterMetricFamily(
        "autoballoon_vm_swap_in_bytes", "Bytes the guest swapped in since it booted.", labels=["vm"]
    )
    c_majflt = CounterMetricFamily(
        "autoballoon_vm_major_faults", "Major page faults in the guest since it booted.", labels=["vm"]
    )
    g_swap_rate = _gauge(
        "autoballoon_vm_swap_in_bytes_per_second", "Swap-in rate over the last two ticks seen.", ["vm"]
    )
    g_majflt_rate = _gauge(
        "autoballoon_vm_major_faults_per_second", "Major fault rate over the last two ticks seen.", ["vm"]
    )
    g_status = _gauge(
        "autoballoon_vm_status",
        "1 for the state the controller puts the VM in, 0 for the others.",
        ["vm", "status"],
    )
    families: list[Metric] = [
        g_max,
        g_target,
        g_actual,
        g_used,
        g_avail,
        g_age,
        c_swap,
        c_majflt,
        g_swap_rate,
        g_majflt_rate,
        g_status,
    ]
    if snap is None:
        return families
    for g in snap.guests:
        vm = [g.name]
        g_max.add_metric(vm, g.max_bytes)
        g_target.add_metric(vm, g.target_bytes)
        if g.actual_bytes is not None:
            g_actual.add_metric(vm, g.actual_bytes)
        if g.used_bytes is not None:
            g_used.add_metric(vm, g.used_bytes)
        if g.stats.available is not None:
            g_avail.add_metric(vm, g.stats.available)
        age = g.stats_age(snap.wall_time)
        if age is not None:
            g_age.add_metric(vm, age)
        if g.stats.swap_in is not None:
            c_swap.add_metric(vm, g.stats.swap_in)
        if g.stats.major_faults is not None:
            c_majflt.add_metric(vm, g.stats.major_faults)
        point = history.latest(g.name) if history is not None else None
        if point is not None:  # the latest rates seen, even if the sampler is a tick behind
            if point.swap_in_bps is not None:
                g_swap_rate.add_metric(vm, point.swap_in_bps)
            if point.major_faults_ps is not None:
                g_majflt_rate.add_metric(vm, point.major_faults_ps)
        current = plan.status.get(g.name) if plan is not None else None
        states = VM_STATUSES if current in VM_STATUSES or current is None else (*VM_STATUSES, current)
        for s in states:
            g_status.add_metric([g.name, s], 1.0 if s == current else 0.0)
    return families


def host_families(view: ServerView) -> list[Metric]:
    snap = view.snapshot
    out: list[Metric] = []

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            fam = _gauge(name, doc)
            fam.add_metric([], value)
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


def controller_families(view: ServerView) -> list[Metric]:
    t = view.ticks
    hist = HistogramMetricFamily("autoballoon_tick_duration_seconds", "Time one controller tick took.")
    buckets = [(repr(float(b)), n) for b, n in t.buckets]
    buckets.append(("+Inf", t.count))
    hist.add_metric([], buckets, sum_value=t.sum_s)
    actions = CounterMetricFamily(
        "autoballoon_actions",
        "Balloon changes applied, by direction and reason.",
        labels=["direction", "reason"],
    )
    for (direction, reason), n in sorted(view.actions.items()):
        actions.add_metric([direction, reason], n)
    errors = CounterMetricFamily("autoballoon_backend_errors", "Failed calls to the hypervisor.")
    errors.add_metric([], view.backend_errors)
    reconnects = CounterMetricFamily("autoballoon_backend_reconnects", "Reconnections to the hypervisor.")
    reconnects.add_metric([], view.reconnects)
    return [hist, actions, errors, reconnects]


class ControllerCollector(Collector):
    """Builds every autoballoon family from the current view, once per scrape."""

    def __init__(self, view: Callable[[], ServerView], history: History | None = None) -> None:
        self._view = view
        self._history = history

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        yield from vm_families(view, self._history)
        yield from host_families(view)
        yield from controller_families(view)


def make_registry(view: Callable[[], ServerView], history: History | None = None) -> CollectorRegistry:
    """A registry with only autoballoon's families (no global default registry: tests run many servers)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(view, history))
    return registry
