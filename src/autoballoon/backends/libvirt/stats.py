"""libvirt's balloon statistics, renamed and converted to the model (pure functions).

The trap this module exists for: libvirt calls the guest's MemTotal ``available``, its MemAvailable
``usable`` and its MemFree ``unused``, all in KiB. Bulk records (``getAllDomainStats``) prefix the same
names with ``balloon.`` and spell ``last-update`` with a hyphen; ``memoryStats()`` uses ``last_update``
and ``actual`` where the bulk call says ``balloon.current``. A value libvirt did not report stays None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import libvirt

from autoballoon.model import GuestStats, VMState
from autoballoon.units import KiB

BULK_PREFIX = "balloon."
#: QEMU's "not reported" (documented as -1, sent as uint64 max); libvirt normally drops these itself.
ABSENT_VALUES = frozenset({-1, 2**64 - 1})
#: Disks read per domain at most (a bulk record could claim any count).
MAX_DISKS = 256
#: Memory fields that are KiB in libvirt; the rest are counts or seconds.
_KIB_FIELDS = {
    "total": "available",
    "available": "usable",
    "free": "unused",
    "caches": "disk_caches",
    "swap_in": "swap_in",
    "swap_out": "swap_out",
}
_COUNT_FIELDS = {"major_faults": "major_fault", "minor_faults": "minor_fault"}

STATE_MAP: dict[int, VMState] = {
    libvirt.VIR_DOMAIN_NOSTATE: VMState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: VMState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VMState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: VMState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VMState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: VMState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: VMState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VMState.PMSUSPENDED,
}

#: What one bulk call asks for: memory, state, vCPU counts, total CPU time and the disks' counters.
BULK_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)


def _value(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value in ABSENT_VALUES:
        return None
    return value


def _kib(raw: Mapping[str, Any], key: str) -> int | None:
    value = _value(raw, key)
    return value * KiB if value is not None else None


def unprefix_bulk(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``balloon.*`` fields of a bulk record under memoryStats()'s names."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key.startswith(BULK_PREFIX):
            name = key[len(BULK_PREFIX) :].replace("-", "_")
            out["actual" if name == "current" else name] = value
    return out


def guest_stats(raw: Mapping[str, Any]) -> GuestStats:
    """GuestStats from memoryStats()-style names (use :func:`unprefix_bulk` for a bulk record)."""
    last = _value(raw, "last_update")
    return GuestStats(
        **{field: _kib(raw, key) for field, key in _KIB_FIELDS.items()},
        **{field: _value(raw, key) for field, key in _COUNT_FIELDS.items()},
        oom_kills=_value(raw, "oom_kill"),
        # 0 means the guest never reported; the model's "absent" is None.
        last_update=float(last) if last else None,
    )


def actual_bytes(raw: Mapping[str, Any]) -> int | None:
    """What the guest holds now (QEMU's query-balloon ``actual``)."""
    return _kib(raw, "actual")


def rss_bytes(raw: Mapping[str, Any]) -> int | None:
    """The QEMU process's resident memory on the host (libvirt reads it from /proc; ``balloon.rss``)."""
    return _kib(raw, "rss")


def maximum_bytes(raw: Mapping[str, Any]) -> int | None:
    """The balloon's ceiling as libvirt reports it (the live ``<memory>``)."""
    return _kib(raw, "maximum")


def has_balloon_fields(record: Mapping[str, Any]) -> bool:
    """Whether a bulk record carries balloon data (the test driver and old libvirt return none)."""
    return any(key.startswith(BULK_PREFIX) for key in record)


def vm_state(record: Mapping[str, Any]) -> VMState | None:
    state = _value(record, "state.state")
    return None if state is None else STATE_MAP.get(state, VMState.UNKNOWN)


def state_reason(record: Mapping[str, Any]) -> int | None:
    """libvirt's reason for the domain's state (why it is paused, how it came to run)."""
    return _value(record, "state.reason")


#: Why a domain is paused (virDomainPausedReason), in the words of a hold reason.
PAUSED_REASONS: dict[int, str] = {
    libvirt.VIR_DOMAIN_PAUSED_USER: "paused by the user",
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "paused for a migration",
    libvirt.VIR_DOMAIN_PAUSED_SAVE: "paused while it is saved",
    libvirt.VIR_DOMAIN_PAUSED_DUMP: "paused for a core dump",
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "paused on an I/O error",
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "paused by its watchdog",
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: "paused (restored from a snapshot)",
    libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: "shutting down",
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: "paused for a snapshot",
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "paused after a crash",
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting up",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "paused in a post-copy migration",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "paused after a failed post-copy migration",
}
#: What a libvirt job is doing (virDomainJobOperation).
JOB_OPERATIONS: dict[int, str] = {
    libvirt.VIR_DOMAIN_JOB_OPERATION_START: "starting",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE: "being saved",
    libvirt.VIR_DOMAIN_JOB_OPERATION_RESTORE: "being restored",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "migrating in",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "migrating out",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT: "a snapshot is being taken",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_REVERT: "reverting to a snapshot",
    libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP: "a core dump is being written",
    libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP: "a backup is running",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_DELETE: "a snapshot is being deleted",
}
_ACTIVE_JOBS = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)


def hold_reason(state: VMState, reason: int | None, job: Mapping[str, Any] | None) -> str | None:
    """Why libvirt says a domain's balloon must be left where it is now, or None.

    A job in progress comes first: a migration copies the guest's memory while it runs, and a balloon
    inflating under it dirties pages the copy must send again (and a shrink decided on the source is
    meaningless on the destination); a save, dump or snapshot writes out memory the same way. A paused
    guest cannot answer a balloon request at all, and libvirt says why it is paused.
    """
    if job is not None and job.get("type") in _ACTIVE_JOBS:
        operation = job.get("operation")
        what = (
            JOB_OPERATIONS.get(operation, "a libvirt job is running") if isinstance(operation, int) else None
        )
        return f"{what or 'a libvirt job is running'}; held until it ends"
    if state is VMState.RUNNING and reason == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY:
        return "migrating out (post-copy); held until it ends"
    if state is VMState.PAUSED:
        return f"{PAUSED_REASONS.get(reason or 0, 'paused')}; held until it runs again"
    return None


def vcpu_counts(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    return _value(record, "vcpu.current"), _value(record, "vcpu.maximum")


def cpu_time_ns(record: Mapping[str, Any]) -> int | None:
    return _value(record, "cpu.time")


def disk_read_bytes(record: Mapping[str, Any]) -> int | None:
    """Bytes read from all the domain's disks (``block.<i>.rd.bytes``, summed), or None if libvirt
    reported no disk with that counter."""
    count = _value(record, "block.count")
    reads = [_value(record, f"block.{i}.rd.bytes") for i in range(min(count or 0, MAX_DISKS))]
    known = [r for r in reads if r is not None]
    return sum(known) if known else None
