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

#: What one bulk call asks for: memory, state, vCPU counts and total CPU time.
BULK_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
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


def maximum_bytes(raw: Mapping[str, Any]) -> int | None:
    """The balloon's ceiling as libvirt reports it (the live ``<memory>``)."""
    return _kib(raw, "maximum")


def has_balloon_fields(record: Mapping[str, Any]) -> bool:
    """Whether a bulk record carries balloon data (the test driver and old libvirt return none)."""
    return any(key.startswith(BULK_PREFIX) for key in record)


def vm_state(record: Mapping[str, Any]) -> VMState | None:
    state = _value(record, "state.state")
    return None if state is None else STATE_MAP.get(state, VMState.UNKNOWN)


def vcpu_counts(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    return _value(record, "vcpu.current"), _value(record, "vcpu.maximum")


def cpu_time_ns(record: Mapping[str, Any]) -> int | None:
    return _value(record, "cpu.time")
