"""The stable JSON shapes of VMs and the host, shared by ``--json`` output and the HTTP API.

Field names here are a public contract (scripts parse them): add fields, never rename or remove them.
Sizes are bytes, ages seconds, unknown values ``null``.
"""

from __future__ import annotations

from typing import Any

from autoballoon import reasons, safety
from autoballoon.model import GuestDecision, GuestSnapshot, HostSnapshot, Status, VirtioMem
from autoballoon.tunables import DEFAULT_TUNABLES, Tunables

#: The fields of ``autoballoon list --json``, in order.
LIST_FIELDS = (
    "name",
    "state",
    "max_bytes",
    "target_bytes",
    "actual_bytes",
    "guest_used_bytes",
    "guest_available_bytes",
    "stats_age_s",
    "balloon_model",
    "vcpus",
    "policy",
    "status",
    "status_reason",
    "host_rss_bytes",
    "mechanism",
)


def _age(g: GuestSnapshot, now_wall: float) -> float | None:
    age = g.stats_age(now_wall)
    return None if age is None else round(age, 3)


def snapshot_status(
    g: GuestSnapshot, now_wall: float, tunables: Tunables = DEFAULT_TUNABLES
) -> tuple[str, str]:
    """``(status, reason)`` from the snapshot alone, when no daemon can say more: excluded, no-stats
    (stats missing or stale) or managed. Only the daemon knows stuck, quarantined and manual-hold."""
    excluded = safety.exclusion(g, g.policy)
    if excluded is not None:
        return Status.EXCLUDED.value, excluded
    hold = safety.hold_reason(g, now_wall, tunables)
    if hold is not None:
        return Status.NO_STATS.value, hold
    return Status.MANAGED.value, ""


def guest_row(g: GuestSnapshot, now_wall: float, status: tuple[str, str] | None = None) -> dict[str, Any]:
    """One VM as ``list --json`` shows it; ``status`` is the daemon's, else computed from the snapshot."""
    state, reason = status if status is not None else snapshot_status(g, now_wall)
    return {
        "name": g.name,
        "state": g.state.value,
        "max_bytes": g.max_bytes,
        "target_bytes": g.target_bytes,
        "actual_bytes": g.actual_bytes,
        "guest_used_bytes": g.used_bytes,
        "guest_available_bytes": g.stats.available,
        "stats_age_s": _age(g, now_wall),
        "balloon_model": g.balloon.model,
        "vcpus": g.vcpus,
        "policy": g.policy.to_json(),
        "status": state,
        "status_reason": reason,
        "host_rss_bytes": g.host_rss_bytes,
        "mechanism": g.mechanism,
    }


#: The keys :func:`judged_fields` adds to a VM object (``info`` reads them from the daemon).
JUDGED_KEYS = (
    "decided_used_bytes",
    "goal_bytes",
    "rule",
    "demand_bytes",
    "oom_floor_bytes",
    "need_bytes",
    "want_bytes",
    "floor_bytes",
    "ceiling_bytes",
    "pressure",
    "swap_in_bytes_per_s",
    "major_faults_per_s",
    "harm",
)

#: What a guest may suffer, worst first: the first that holds is its ``harm`` (see :func:`harm_of`).
HARMS = ("below-oom-floor", "swapping", "pressure", "below-need")


def harm_of(
    decision: GuestDecision | None, actual: int | None, swap_in_bps: float | None, swap_line: float
) -> str | None:
    """The worst harm a guest suffers now, or None when it is fine.

    ``managed`` says only that the daemon balloons a guest, not that the guest is well: on a host too
    short for every want, guests sit below their need and swap while every one is "managed". This is the
    word that says so, judged from what the decision sized (OOM floor, need, pressure) and what the guest
    does (swap-in at or above ``swap_line`` bytes per second, the policy's own pressure line).
    """
    judged = decision if decision is not None else GuestDecision()
    if actual is not None and judged.oom_floor is not None and actual < judged.oom_floor:
        return HARMS[0]
    if swap_in_bps is not None and swap_in_bps >= swap_line:
        return HARMS[1]
    if judged.pressure:
        return HARMS[2]
    if actual is not None and judged.need is not None and actual < judged.need:
        return HARMS[3]
    return None


def judged_fields(
    decision: GuestDecision | None,
    actual: int | None,
    swap_in_bps: float | None,
    major_faults_ps: float | None,
    swap_line: float,
    moved: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The figures a decision judged one VM by, and the harm they show, as the API's VM objects carry
    them (sizes in bytes, ``null`` when the decision did not size it). ``moved`` is the target before
    and after the decision, for the rule that bound it (see :func:`autoballoon.reasons.binding_rule`)."""
    judged = decision if decision is not None else GuestDecision()
    rule = reasons.binding_rule(judged, *moved) if moved is not None else None
    return {
        "decided_used_bytes": judged.used,
        "goal_bytes": judged.goal,
        "rule": rule,
        "demand_bytes": judged.demand,
        "oom_floor_bytes": judged.oom_floor,
        "need_bytes": judged.need,
        "want_bytes": judged.want,
        "floor_bytes": judged.floor,
        "ceiling_bytes": judged.ceiling,
        "pressure": judged.pressure,
        "swap_in_bytes_per_s": swap_in_bps,
        "major_faults_per_s": major_faults_ps,
        "harm": harm_of(decision, actual, swap_in_bps, swap_line),
    }


def guest_detail(g: GuestSnapshot, now_wall: float) -> dict[str, Any]:
    """Everything known about one VM: ``virsh dominfo`` and ``dommemstat`` in one object."""
    s = g.stats
    row = guest_row(g, now_wall)
    row.update(
        {
            "uuid": g.uuid,
            "persistent": g.persistent,
            "os_type": g.os_type,
            "max_vcpus": g.max_vcpus,
            "cpu_time_s": None if g.cpu_time_ns is None else g.cpu_time_ns / 1e9,
            "balloon": {
                "model": g.balloon.model,
                "autodeflate": g.balloon.autodeflate,
                "free_page_reporting": g.balloon.free_page_reporting,
                "stats_period_s": g.balloon.stats_period,
            },
            "stats": {
                "total_bytes": s.total,
                "available_bytes": s.available,
                "free_bytes": s.free,
                "disk_caches_bytes": s.caches,
                "swap_in_bytes": s.swap_in,
                "swap_out_bytes": s.swap_out,
                "major_faults": s.major_faults,
                "minor_faults": s.minor_faults,
                "oom_kills": s.oom_kills,
                "last_update": s.last_update,
            },
            "balloon_size_bytes": None if g.actual_bytes is None else g.max_bytes - g.actual_bytes,
            "virtio_mem": None if g.virtio_mem is None else virtio_mem_view(g.virtio_mem),
        }
    )
    return row


def virtio_mem_view(v: VirtioMem) -> dict[str, int]:
    """A virtio-mem device: block size, plugged and requested size, region and the boot memory under it."""
    return {
        "block_bytes": v.block_bytes,
        "plugged_bytes": v.plugged_bytes,
        "requested_bytes": v.requested_bytes,
        "region_bytes": v.region_bytes,
        "boot_bytes": v.boot_bytes,
    }


def sum_host_rss(h: HostSnapshot) -> int | None:
    """What the running VMs' QEMU processes hold at the host, or None unless every one is known (a
    partial sum would read as memory given back)."""
    values = [g.host_rss_bytes for g in h.guests if g.state.active]
    return sum(v for v in values if v is not None) if all(v is not None for v in values) else None


def host_view(h: HostSnapshot) -> dict[str, Any]:
    """The host as ``autoballoon host --json`` shows it."""
    running = [g for g in h.guests if g.state.active]
    return {
        "hostname": h.hostname,
        "mem_total_bytes": h.mem_total,
        "mem_available_bytes": h.mem_available,
        "swap_total_bytes": h.swap_total,
        "swap_free_bytes": h.swap_free,
        "psi_some_avg10": h.psi_some_avg10,
        "psi_full_avg10": h.psi_full_avg10,
        "ksm_running": h.ksm_running,
        "ksm_saved_bytes": h.ksm_saved_bytes,
        "load_avg1": h.load_avg1,
        "cpu_count": h.cpu_count,
        "vms_total": len(h.guests),
        "vms_running": len(running),
        "sum_max_bytes": h.sum_max,
        "sum_target_bytes": h.sum_target,
        "sum_actual_bytes": h.sum_actual,
        "sum_host_rss_bytes": sum_host_rss(h),
        "overcommit_ratio": round(h.overcommit_ratio, 4),
    }
