"""The backend contract on real guests, run once per backend: libvirt (``qemu:///system``), and the QMP
backend on plain QEMU guests, with a connection per call (the default) and with held connections.

What every backend must do the same way: map the guest's own memory figures, remember the target it
set while the balloon moves to it, change the stats period live, refuse what it cannot do without
changing anything, and measure the QEMU process's RSS at the host. What only one backend does (a
libvirtd restart, the QMP socket's life) is tested beside it (test_backend.py, test_qmp.py).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoballoon.backends import open_backend
from autoballoon.errors import LimitError, RefusedError, UnknownVMError
from autoballoon.hostinfo import process_rss, read_host_info, read_pidfile
from autoballoon.model import BalloonChange, VMState
from autoballoon.rig.domains import URI, Guest, GuestSpec
from autoballoon.rig.qemu import QemuGuest, QemuSpec
from autoballoon.units import MiB
from tests.real.qmp.conftest import SOCKET_DIR_PREFIX
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

GUEST_BYTES = 512 * MiB
DEADLINE_S = 5.0
KINDS = ("libvirt", "qmp", "qmp-hold")
#: The QEMU process's RSS as the backend reports it and as /proc shows it a moment later.
RSS_SLACK = 24 * MiB
TOUCH_MIB = 200
RECLAIM_AT_LEAST = 100 * MiB
#: The second guest's swap disk: the guest reads its header when it turns swap on.
SWAP_BYTES = 64 * MiB


@dataclass
class Subject:
    """One backend on two running guests of its kind."""

    kind: str
    backend: Any
    guests: list[Guest]

    def pid(self, guest: Guest) -> int | None:
        """QEMU's PID, found without the backend (libvirt's pid file, or the process the rig started)."""
        if isinstance(guest, QemuGuest):
            return guest.pid
        return read_pidfile(Path("/run/libvirt/qemu") / f"{guest.name}.pid")


@pytest.fixture(scope="module", params=KINDS)
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    kind = request.param
    if kind == "libvirt":
        rig = request.getfixturevalue("rig")
        guests: list[Guest] = rig.boot([GuestSpec(), GuestSpec(swap_bytes=SWAP_BYTES)])
        backend = open_backend(URI)
        try:
            yield Subject(kind, backend, guests)
        finally:
            backend.close()
            for guest in guests:
                with contextlib.suppress(Exception):
                    rig.destroy(guest)
        return
    qrig = request.getfixturevalue("qemu_rig")
    with tempfile.TemporaryDirectory(prefix=SOCKET_DIR_PREFIX) as directory:
        swap = GuestSpec(swap_bytes=SWAP_BYTES)
        qguests = qrig.boot([QemuSpec(directory=Path(directory)), QemuSpec(swap, directory=Path(directory))])
        hold = "&hold=on" if kind == "qmp-hold" else ""
        backend = open_backend(f"qmp://{directory}/?glob=*.qmp{hold}")
        try:
            yield Subject(kind, backend, list(qguests))
        finally:
            backend.close()
            for guest in qguests:
                with contextlib.suppress(Exception):
                    qrig.stop(guest)


def test_the_bytes_a_guest_reads_from_its_disks_are_counted(subject: Subject) -> None:
    """The refault rule counts a guest's disk reads (a read() that misses its page cache is no fault):
    the backend sums the block counters over the guest's disks. The first guest has none."""
    diskless, with_swap = subject.guests
    read, _ = wait_for(
        lambda: subject.backend.guest(with_swap.name).disk_read_bytes,
        lambda v: v is not None and v > 0,
        DEADLINE_S,
        "bytes read from the swap disk",
    )
    assert read < SWAP_BYTES  # its header and a few pages, not the whole disk
    assert subject.backend.guest(diskless.name).disk_read_bytes is None


def restore(subject: Subject, guest: Guest) -> None:
    subject.backend.set_target(guest.name, GUEST_BYTES)
    wait_for(
        lambda: subject.backend.guest(guest.name).actual_bytes,
        lambda v: v == GUEST_BYTES,
        DEADLINE_S * 2,
        f"{guest.name} deflated",
    )


def test_snapshot_maps_the_backend_to_what_the_guest_sees(subject: Subject) -> None:
    backend, guests = subject.backend, subject.guests

    def fresh(snap: Any) -> bool:
        return all((g := snap.guest(x.name)) is not None and g.stats.present for x in guests)

    snap, _ = wait_for(backend.snapshot, fresh, 20, "guest stats present")
    assert snap.mem_total == read_host_info().mem_total and abs(snap.wall_time - time.time()) < 1
    for guest in guests:
        g = snap.guest(guest.name)
        own = guest.control.meminfo()
        assert g.state is VMState.RUNNING and not g.persistent
        assert g.os_type == ("linux" if subject.kind == "libvirt" else "unknown")  # no OS hint on QEMU's line
        assert g.max_bytes == GUEST_BYTES and g.actual_bytes == GUEST_BYTES and g.target_bytes == GUEST_BYTES
        assert g.stats.total == own["MemTotal"]  # libvirt's "available", QEMU's stat-total-memory
        assert abs(g.stats.available - own["MemAvailable"]) < 32 * MiB  # one period old
        assert g.stats.free is not None and g.stats.free <= g.stats.total
        assert 0 <= snap.wall_time - g.stats.last_update < DEADLINE_S
        assert g.balloon.stats_period == 1 and (g.vcpus, g.max_vcpus) == (1, 2)
        assert g.cpu_time_ns is not None and g.cpu_time_ns > 0
        assert g.mechanism == "balloon" and g.virtio_mem is None
        pid = subject.pid(guest)
        assert pid is not None
        rss = process_rss(pid)
        assert g.host_rss_bytes is not None and rss is not None
        assert 32 * MiB < g.host_rss_bytes < GUEST_BYTES + 512 * MiB
        assert abs(g.host_rss_bytes - rss) < RSS_SLACK, (g.host_rss_bytes, rss)


def test_the_target_is_remembered_while_the_balloon_follows(subject: Subject) -> None:
    backend = subject.backend
    guest = subject.guests[0]
    total_before = guest.control.meminfo()["MemTotal"]
    backend.set_target(guest.name, 300 * MiB)
    try:
        assert backend.guest(guest.name).target_bytes == 300 * MiB  # QEMU reports no target: ours
        _, took = wait_for(
            lambda: backend.guest(guest.name).actual_bytes, lambda v: v == 300 * MiB, DEADLINE_S, "actual"
        )
        assert backend.guest(guest.name).target_bytes == 300 * MiB
        shrunk = total_before - guest.control.meminfo()["MemTotal"]
        assert abs(shrunk - 212 * MiB) < 4 * MiB  # the guest lost what the balloon took
        if subject.kind != "qmp":  # events arrive only on a connection that stays open
            wait_for(
                lambda: backend.last_balloon_change(guest.name),
                lambda e: e is not None and e.actual_bytes == 300 * MiB,
                DEADLINE_S,
                "BALLOON_CHANGE event",
            )
        print(f"{subject.kind}: balloon inflated by 212 MiB in {took:.1f} s")
    finally:
        restore(subject, guest)


def test_the_stats_period_changes_live(subject: Subject) -> None:
    backend = subject.backend
    guest = subject.guests[1]
    try:
        result = backend.set_balloon(guest.name, BalloonChange(stats_period=3))
        assert result.live and "3 s" in result.message
        assert backend.guest(guest.name).balloon.stats_period == 3
    finally:
        backend.set_balloon(guest.name, BalloonChange(stats_period=1))
    assert backend.guest(guest.name).balloon.stats_period == 1


def test_refusals_name_the_vm_and_change_nothing(subject: Subject) -> None:
    backend = subject.backend
    name = subject.guests[1].name
    before = backend.guest(name)
    with pytest.raises(UnknownVMError, match="abtest-nope"):
        backend.set_target("abtest-nope", 100 * MiB)
    with pytest.raises(LimitError, match=name):
        backend.set_target(name, GUEST_BYTES + MiB)
    with pytest.raises(RefusedError, match="refused"):  # transient / no persistent config
        backend.set_target(name, 300 * MiB, live=False, config=True)
    with pytest.raises(RefusedError, match=name):
        backend.set_vcpus(name, 3)
    after = backend.guest(name)
    assert (after.target_bytes, after.actual_bytes, after.vcpus) == (
        before.target_bytes,
        before.actual_bytes,
        1,
    )


def test_host_rss_falls_when_the_balloon_takes_memory_the_guest_touched(subject: Subject) -> None:
    backend = subject.backend
    guest = subject.guests[0]
    guest.control.alloc(TOUCH_MIB)
    guest.control.free_all()  # free in the guest, still resident in QEMU: only the balloon gives it back
    before = backend.guest(guest.name).host_rss_bytes
    assert before is not None
    backend.set_target(guest.name, 200 * MiB)
    try:
        wait_for(
            lambda: backend.guest(guest.name).actual_bytes, lambda v: v == 200 * MiB, DEADLINE_S, "actual"
        )
        after = backend.guest(guest.name).host_rss_bytes
        assert after is not None and before - after >= RECLAIM_AT_LEAST, (before // MiB, after // MiB)
        print(f"{subject.kind}: QEMU RSS {before // MiB} -> {after // MiB} MiB with the balloon at 200 MiB")
    finally:
        restore(subject, guest)
