"""QMP's answers, mapped onto the model (pure functions, tested on QEMU's real replies).

Where the names differ from libvirt's: QEMU calls the guest's MemTotal ``stat-total-memory``, its
MemAvailable ``stat-available-memory`` and its MemFree ``stat-free-memory``, all in **bytes** (libvirt
divides them into KiB and renames them). A stat the guest does not report is ``2**64 - 1`` on the wire
(QEMU's documentation says -1; the code sends an unsigned 64-bit value), and ``last-update`` is 0 until
the guest first reports. ``query-balloon``'s ``actual`` counts only the boot memory (and DIMMs):
memory a virtio-mem device plugged is not in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoballoon.model import GuestStats, VirtioMem, VMState

#: ``query-memory-devices`` entry types of memory the balloon is sized on, beside the boot memory.
DIMM_TYPES = ("dimm", "nvdimm")
#: QEMU's "not reported", both as documented and as sent.
ABSENT_VALUES = frozenset({-1, 2**64 - 1})
_STAT_FIELDS = {
    "total": "stat-total-memory",
    "available": "stat-available-memory",
    "free": "stat-free-memory",
    "caches": "stat-disk-caches",
    "swap_in": "stat-swap-in",
    "swap_out": "stat-swap-out",
    "major_faults": "stat-major-faults",
    "minor_faults": "stat-minor-faults",
    "oom_kills": "stat-oom-kills",  # QEMU 9.1+ with Linux 6.12+ guests; absent before
}
#: QOM types of the balloon device (its PCI/CCW proxy aliases the guest-stats properties).
BALLOON_TYPES = (
    "virtio-balloon-pci",
    "virtio-balloon-pci-transitional",
    "virtio-balloon-pci-non-transitional",
    "virtio-balloon-ccw",
    "virtio-balloon-device",
)
VIRTIO_MEM_TYPES = ("virtio-mem-pci", "virtio-mem-ccw")
#: Where -device puts devices: under their id, or numbered when they have none.
PERIPHERAL_CONTAINERS = ("/machine/peripheral", "/machine/peripheral-anon")

#: ``query-status`` run states (QAPI RunState) as the model's domain states.
RUN_STATES: dict[str, VMState] = {
    "running": VMState.RUNNING,
    "suspended": VMState.PMSUSPENDED,
    "shutdown": VMState.SHUTDOWN,
    "guest-panicked": VMState.CRASHED,
    "internal-error": VMState.CRASHED,
    "debug": VMState.PAUSED,
    "inmigrate": VMState.PAUSED,
    "postmigrate": VMState.PAUSED,
    "prelaunch": VMState.PAUSED,
    "finish-migrate": VMState.PAUSED,
    "restore-vm": VMState.PAUSED,
    "paused": VMState.PAUSED,
    "save-vm": VMState.PAUSED,
    "watchdog": VMState.PAUSED,
    "io-error": VMState.PAUSED,
    "colo": VMState.PAUSED,
}


#: Run states in which the balloon must be left where it is, in the words of a hold reason.
HOLD_STATES: dict[str, str] = {
    "inmigrate": "migrating in",
    "postmigrate": "migrated out (post-migrate)",
    "finish-migrate": "finishing a migration",
    "save-vm": "being saved",
    "restore-vm": "being restored",
    "paused": "paused",
    "prelaunch": "not started yet (prelaunch)",
    "debug": "stopped in the debugger",
    "watchdog": "paused by its watchdog",
    "io-error": "paused on an I/O error",
    "colo": "in COLO replication",
    "suspended": "suspended by the guest",
}
#: ``query-migrate`` statuses of a migration in progress (QAPI MigrationStatus).
MIGRATING = frozenset(
    {"setup", "active", "pre-switchover", "device", "postcopy-active", "postcopy-paused", "wait-unplug"}
)


def hold_reason(status: Any, migration: Any) -> str | None:
    """Why QEMU says the balloon must be left alone now (a migration copies memory the balloon would
    dirty, a paused guest cannot answer it), or None."""
    if isinstance(migration, Mapping) and migration.get("status") in MIGRATING:
        return f"migrating out ({migration.get('status')}); held until it ends"
    run_state = status.get("status") if isinstance(status, Mapping) else None
    what = HOLD_STATES.get(str(run_state))
    return f"{what}; held until it runs again" if what else None


def passthrough_devices(entries: Any) -> list[str]:
    """Names of VFIO devices in a ``qom-list`` of peripherals: they pin all guest memory for DMA, so QEMU
    disables discarding it and an inflated balloon frees nothing at the host."""
    if not isinstance(entries, list):
        return []
    return [
        str(e.get("name"))
        for e in entries
        if isinstance(e, Mapping) and str(e.get("type", "")).startswith("child<vfio-")
    ]


def number(value: Any) -> int | None:
    """A QMP integer, or None for QEMU's "absent" and anything that is not an integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value in ABSENT_VALUES:
        return None
    return value


def disk_read_bytes(reply: Any) -> int | None:
    """Bytes read from all the VM's block devices (``query-blockstats``: each entry's ``stats.rd_bytes``,
    summed), or None if no device reported the counter."""
    if not isinstance(reply, list):
        return None
    reads = [
        number(e["stats"].get("rd_bytes"))
        for e in reply
        if isinstance(e, Mapping) and isinstance(e.get("stats"), Mapping)
    ]
    known = [r for r in reads if r is not None]
    return sum(known) if known else None


def dimm_bytes(reply: Any) -> int:
    """Memory in hot-plugged DIMMs (``pc-dimm``, ``nvdimm``; Proxmox's ``hotplug: memory``), from
    ``query-memory-devices``. QEMU sizes the balloon on the boot memory and these DIMMs together."""
    if not isinstance(reply, list):
        return 0
    total = 0
    for entry in reply:
        if isinstance(entry, Mapping) and entry.get("type") in DIMM_TYPES:
            data = entry.get("data")
            total += (number(data.get("size")) or 0) if isinstance(data, Mapping) else 0
    return total


def guest_stats(reply: Any) -> GuestStats:
    """``qom-get guest-stats``: ``{"stats": {"stat-…": n}, "last-update": epoch-seconds}``."""
    if not isinstance(reply, Mapping):
        return GuestStats()
    raw = reply.get("stats")
    stats: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    last = number(reply.get("last-update"))
    return GuestStats(
        **{field: number(stats.get(key)) for field, key in _STAT_FIELDS.items()},
        last_update=float(last) if last else None,
    )


def vm_state(reply: Any) -> VMState:
    """``query-status``'s run state as a domain state (an unknown one is UNKNOWN, never an error)."""
    if not isinstance(reply, Mapping):
        return VMState.UNKNOWN
    return RUN_STATES.get(str(reply.get("status")), VMState.UNKNOWN)


def child_paths(container: str, entries: Any, types: Sequence[str]) -> list[str]:
    """QOM paths of the children of ``container`` (a ``qom-list`` reply) whose type is one of ``types``."""
    if not isinstance(entries, list):
        return []
    wanted = {f"child<{t}>" for t in types}
    return [
        f"{container}/{e['name']}"
        for e in entries
        if isinstance(e, Mapping) and e.get("type") in wanted and isinstance(e.get("name"), str)
    ]


def virtio_mem_devices(reply: Any) -> dict[int, Mapping[str, Any]]:
    """``query-memory-devices``' virtio-mem entries by guest-physical address (``memaddr``), which is what
    ties an entry to its QOM object when the device has no id."""
    out: dict[int, Mapping[str, Any]] = {}
    if not isinstance(reply, list):
        return out
    for entry in reply:
        if not isinstance(entry, Mapping) or entry.get("type") != "virtio-mem":
            continue
        data = entry.get("data")
        if isinstance(data, Mapping) and (addr := number(data.get("memaddr"))) is not None:
            out[addr] = data
    return out


def virtio_mem(data: Mapping[str, Any], boot_bytes: int) -> VirtioMem | None:
    """One virtio-mem entry of ``query-memory-devices`` on a guest that booted with ``boot_bytes``."""
    block = number(data.get("block-size"))
    plugged = number(data.get("size"))
    requested = number(data.get("requested-size"))
    region = number(data.get("max-size"))
    if block is None or plugged is None or requested is None or region is None or block <= 0:
        return None
    return VirtioMem(
        block_bytes=block,
        plugged_bytes=plugged,
        requested_bytes=requested,
        region_bytes=region,
        boot_bytes=boot_bytes,
    )


def vcpu_threads(reply: Any) -> list[int]:
    """Host thread ids of the vCPUs (``query-cpus-fast``), for their CPU time in /proc."""
    if not isinstance(reply, list):
        return []
    return [tid for cpu in reply if isinstance(cpu, Mapping) and (tid := number(cpu.get("thread-id")))]


def balloon_value(ram_bytes: int, target_bytes: int) -> int:
    """The guest size QEMU will steer the balloon to for a ``balloon`` request of ``target_bytes``.

    QEMU turns the request into whole 4 KiB balloon pages, ``(ram - value) >> 12``, so the guest ends up
    with ``target`` rounded *up* to a page; the backend reports that, so a target it set and the
    ``actual`` the guest reaches are equal figures.
    """
    page = 4096
    below = max(0, ram_bytes - target_bytes)
    return ram_bytes - below // page * page
