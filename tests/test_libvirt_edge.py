"""The libvirt edge: what libvirt says about a domain or a host that forbids ballooning it now (held) or at
all (excluded), as the snapshot carries it to the guards.

Pure functions on samples, and libvirt's own test driver (``test:///default``, in this process, no
daemon) for domains with VFIO devices, locked or huge-page memory. Real migrations, pauses and jobs are
in tests/real/test_faults.py.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from autoballoon import safety
from autoballoon.model import GuestSnapshot, VMState
from autoballoon.tunables import Tunables
from autoballoon.views import snapshot_status
from tests.needs import need_module

libvirt = need_module("libvirt", "pip install 'autoballoon[libvirt]' (needs libvirt-dev and pkg-config)")

from autoballoon.backends.libvirt import stats as lvstats  # noqa: E402
from autoballoon.backends.libvirt import xml as lvxml  # noqa: E402
from autoballoon.backends.libvirt.backend import LibvirtBackend  # noqa: E402

URI = "test:///default"
_names = itertools.count()

DOMAIN = """<domain type='test'><name>{name}</name><memory unit='MiB'>1024</memory>
<currentMemory unit='MiB'>1024</currentMemory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
{backing}<devices>{device}<memballoon model='virtio'/></devices></domain>"""
VFIO = (
    "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x06' slot='0x02' function='0x0'/></source></hostdev>"
)
SRIOV = (
    "<interface type='hostdev' managed='yes'><source>"
    "<address type='pci' domain='0x0000' bus='0x06' slot='0x02' function='0x1'/></source></interface>"
)
USB = (
    "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/>"
    "</source></hostdev>"
)
INCAPABLE = [
    ("", VFIO, "VFIO host device"),
    ("", SRIOV, "VFIO host device"),
    ("<memoryBacking><locked/></memoryBacking>", "", "locked"),
    ("<memoryBacking><hugepages/></memoryBacking>", "", "huge pages"),
]


@pytest.mark.parametrize(("backing", "device", "why"), INCAPABLE, ids=[w for *_, w in INCAPABLE])
def test_balloon_incapable_domains_are_recognised(backing: str, device: str, why: str) -> None:
    root = ET.fromstring(DOMAIN.format(name="x", backing=backing, device=device))
    reason = lvxml.balloon_incapable(root)
    assert reason is not None and why in reason
    assert lvxml.parse_domain(ET.tostring(root, encoding="unicode")).incapable == reason


def test_a_usb_device_does_not_pin_memory() -> None:
    assert lvxml.balloon_incapable(ET.fromstring(DOMAIN.format(name="x", backing="", device=USB))) is None


@pytest.mark.parametrize(
    ("state", "reason", "job", "expected"),
    [
        (VMState.RUNNING, 1, {"type": 0}, None),
        (VMState.RUNNING, 1, None, None),
        (
            VMState.RUNNING,
            1,
            {"type": 2, "operation": libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT},
            "migrating out",
        ),
        (VMState.RUNNING, 1, {"type": 2, "operation": libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP}, "core dump"),
        (VMState.RUNNING, 1, {"type": 1}, "a libvirt job is running"),
        (VMState.RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY, None, "post-copy"),
        (VMState.PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, None, "paused by the user"),
        (VMState.PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, None, "paused for a migration"),
        (VMState.PAUSED, libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN, None, "shutting down"),
        (VMState.PAUSED, 999, None, "paused"),
    ],
)
def test_hold_reasons_from_state_and_job(
    state: VMState, reason: int, job: dict[str, int] | None, expected: str | None
) -> None:
    held = lvstats.hold_reason(state, reason, job)
    if expected is None:
        assert held is None
    else:
        assert held is not None and expected in held


def _guest(**kw: Any) -> GuestSnapshot:
    base: dict[str, Any] = {
        "name": "vm",
        "state": VMState.RUNNING,
        "max_bytes": 2 << 30,
        "target_bytes": 1 << 30,
        "actual_bytes": 1 << 30,
    }
    return GuestSnapshot(**(base | kw))


def test_the_guards_hold_and_exclude_what_the_snapshot_says() -> None:
    held = _guest(hold="migrating out; held until it ends")
    assert safety.hold_reason(held, 0.0, Tunables()) == "migrating out; held until it ends"
    assert snapshot_status(held, 0.0) == ("no-stats", "migrating out; held until it ends")
    stuck = _guest(incapable="balloon ineffective: a VFIO host device pins all guest memory")
    assert safety.exclusion(stuck, stuck.policy) == stuck.incapable
    assert snapshot_status(stuck, 0.0) == ("excluded", stuck.incapable)


@pytest.fixture
def backend() -> Iterator[LibvirtBackend]:
    b = LibvirtBackend.open(URI)
    yield b
    b.close()


@pytest.fixture
def domains(backend: LibvirtBackend) -> Iterator[list[str]]:
    """Transient test-driver domains made for one test, destroyed after it."""
    made: list[str] = []
    yield made
    conn = libvirt.open(URI)
    for name in made:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).destroy()
    conn.close()


@pytest.mark.parametrize(("backing", "device", "why"), INCAPABLE, ids=[w for *_, w in INCAPABLE])
def test_list_shows_a_balloon_incapable_vm_as_excluded_with_the_reason(
    backend: LibvirtBackend, domains: list[str], backing: str, device: str, why: str
) -> None:
    name = f"edge-{next(_names)}"
    conn = libvirt.open(URI)
    conn.createXML(DOMAIN.format(name=name, backing=backing, device=device), 0)
    conn.close()
    domains.append(name)
    snap = backend.snapshot()
    guest = snap.guest(name)
    assert guest is not None and guest.incapable is not None and why in guest.incapable
    status, reason = snapshot_status(guest, snap.wall_time)
    assert status == "excluded" and why in reason


class _NoFreeMemory:
    """A real test-driver connection whose host will not say how much memory is free, like a remote
    host whose driver answers neither node call; everything else is libvirt's own."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def getFreeMemory(self) -> int:
        raise libvirt.libvirtError("virNodeGetFreeMemory: operation failed (simulated remote host)")


def test_a_host_whose_memory_cannot_be_read_is_held_not_assumed_free(
    backend: LibvirtBackend, caplog: pytest.LogCaptureFixture
) -> None:
    assert backend.snapshot().hold is None  # the test driver answers getFreeMemory
    real = backend._conn
    backend._conn = _NoFreeMemory(real)
    try:
        with caplog.at_level(logging.WARNING):
            first = backend.snapshot()
            second = backend.snapshot()
    finally:
        backend._conn = real
    for snap in (first, second):
        assert snap.hold is not None and "host memory unknown" in snap.hold
        assert snap.mem_available == 0  # what is known to be free; it was the whole RAM before
        assert snap.guests and all(g.hold is not None for g in snap.guests)
        assert all(safety.hold_reason(g, snap.wall_time, Tunables()) == g.hold for g in snap.guests)
    warnings = [r for r in caplog.records if "host memory unknown" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # once, not every tick
    with caplog.at_level(logging.WARNING):
        assert backend.snapshot().hold is None
    assert "no longer held" in caplog.text


def test_the_policy_moves_nothing_on_a_held_host() -> None:
    """Held guests (host memory unknown) are neither shrunk, though idle, nor grown, though short."""
    from dataclasses import replace

    from autoballoon.model import GuestStats, HostSnapshot
    from autoballoon.policy import DefaultPolicy, Inputs

    hold = "host memory unknown: simulated"
    gib = 1 << 30
    idle = _guest(name="idle", max_bytes=8 * gib, target_bytes=6 * gib, actual_bytes=6 * gib)
    short = _guest(name="short", max_bytes=8 * gib, target_bytes=1 * gib, actual_bytes=1 * gib)
    policy = DefaultPolicy(Tunables())
    state = policy.initial_state()
    for tick in range(5):
        now = 1000.0 + 2 * tick
        stats = {
            "idle": GuestStats(total=6 * gib, available=5 * gib, last_update=now),
            "short": GuestStats(total=1 * gib, available=10 << 20, swap_in=tick << 28, last_update=now),
        }
        guests = tuple(replace(g, stats=stats[g.name], hold=hold) for g in (idle, short))
        snap = HostSnapshot(
            time=now, wall_time=now, mem_total=64 * gib, mem_available=0, guests=guests, hold=hold
        )
        plan, state = policy.decide(snap, Inputs(), state)
        assert plan.actions == (), plan.actions
        assert all(plan.status[g.name] == "no-stats" and hold in plan.status_reason[g.name] for g in guests)


@pytest.mark.parametrize(
    ("record", "read"),
    [
        ({"block.count": 2, "block.0.rd.bytes": 4096, "block.1.rd.bytes": 8192}, 12288),
        ({"block.count": 2, "block.0.rd.bytes": 4096}, 4096),  # a disk without the counter (an empty cdrom)
        ({"block.count": 0}, None),
        ({}, None),  # libvirt sent no block group
        ({"block.count": 1, "block.0.rd.bytes": -1}, None),  # QEMU's "not reported"
        ({"block.count": 10**9, "block.0.rd.bytes": 1}, 1),  # a count past reason reads at most MAX_DISKS
    ],
)
def test_disk_reads_are_summed_over_the_disks_libvirt_reports(
    record: dict[str, int], read: int | None
) -> None:
    assert lvstats.disk_read_bytes(record) == read
