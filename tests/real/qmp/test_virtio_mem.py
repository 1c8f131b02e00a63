"""virtio-mem on real guests, through both backends: a target on top of the boot memory is plugged in
blocks (rounded up), a smaller one unplugged; a guest that allocates and then gets more memory keeps
running (no OOM kill); memory the guest uses is not taken from it.

Each guest boots with 256 MiB of ordinary RAM (with a balloon, for its stats) and a 512 MiB virtio-mem
region, nothing plugged. Its /init onlines plugged memory as the kernel's auto-movable policy decides,
so that it can be unplugged again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from autoballoon.backends import open_backend
from autoballoon.rig.domains import URI, Guest, GuestSpec, wait_booted
from autoballoon.rig.qemu import VirtioMemSpec, start_libvirt_virtio_mem
from autoballoon.units import MiB
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

BOOT = 256 * MiB
REGION = 512 * MiB
BLOCK = 2 * MiB
PLUG_TIMEOUT_S = 30.0
#: The guest's own MemTotal with 256 MiB of boot memory is ~150 MiB (kernel, initramfs); the workload
#: takes part of that, then more than it holds once blocks are plugged.
FIRST_MIB = 60
MORE_MIB = 200
#: A guest driver that could not unplug everything retries on a timer that backs off (Linux
#: drivers/virtio/virtio_mem.c: 5 s doubling up to 5 min), so an unplug after a free can take a while.
UNPLUG_RETRY_S = 90.0


@dataclass
class VmemGuest:
    kind: str
    backend: Any
    guest: Guest


@pytest.fixture(params=("qmp", "libvirt"))
def vmem_guest(request: pytest.FixtureRequest, socket_dir: Any) -> Iterator[VmemGuest]:
    vmem = VirtioMemSpec(region_bytes=REGION, block_bytes=BLOCK)
    spec = GuestSpec(memory_bytes=BOOT)
    if request.param == "qmp":
        make = request.getfixturevalue("make_qemu_guests")
        (guest,) = make(1, directory=socket_dir, guest=spec, virtio_mem=vmem)
        backend = open_backend(f"qmp://{guest.qmp}")
        try:
            yield VmemGuest("qmp", backend, guest)
        finally:
            backend.close()
        return
    rig = request.getfixturevalue("rig")
    lv = start_libvirt_virtio_mem(rig.connection(), rig.image, spec, vmem)
    rig.guests.append(lv)  # removed by the session even if this fixture cannot
    try:
        wait_booted([lv])
        backend = open_backend(URI)
        try:
            yield VmemGuest("libvirt", backend, lv)
        finally:
            backend.close()
    finally:
        with contextlib.suppress(Exception):
            rig.destroy(lv)


def plugged(v: VmemGuest) -> int:
    g = v.backend.guest(v.guest.name)
    assert g.virtio_mem is not None
    return int(g.virtio_mem.plugged_bytes)


def test_grow_and_shrink_by_blocks(vmem_guest: VmemGuest) -> None:
    backend, guest = vmem_guest.backend, vmem_guest.guest
    g = backend.guest(guest.name)
    assert g.mechanism == "virtio-mem" and g.max_bytes == BOOT + REGION
    assert g.virtio_mem is not None
    assert (g.virtio_mem.block_bytes, g.virtio_mem.region_bytes, g.virtio_mem.boot_bytes) == (
        BLOCK,
        REGION,
        BOOT,
    )
    assert g.virtio_mem.plugged_bytes == 0 and g.actual_bytes == BOOT
    total0 = guest.control.meminfo()["MemTotal"]

    backend.set_target(guest.name, BOOT + 301 * MiB)  # not a whole block: rounded up, never short
    wait_for(lambda: plugged(vmem_guest), lambda p: p == 302 * MiB, PLUG_TIMEOUT_S, "302 MiB plugged")
    g = backend.guest(guest.name)
    assert g.target_bytes == BOOT + 302 * MiB and g.actual_bytes == BOOT + 302 * MiB
    grown = guest.control.meminfo()["MemTotal"] - total0
    assert abs(grown - 302 * MiB) < 8 * MiB, grown // MiB  # the guest sees every plugged block

    backend.set_target(guest.name, BOOT + 40 * MiB)
    wait_for(lambda: plugged(vmem_guest), lambda p: p == 40 * MiB, PLUG_TIMEOUT_S, "unplugged to 40 MiB")
    shrunk = guest.control.meminfo()["MemTotal"] - total0
    assert abs(shrunk - 40 * MiB) < 8 * MiB, shrunk // MiB
    assert guest.control.oomkills() == 0
    print(f"{vmem_guest.kind}: grown to +302 MiB and back to +40 MiB in blocks of 2 MiB")


def test_an_allocation_then_growth_then_a_shrink_the_guest_cannot_give(vmem_guest: VmemGuest) -> None:
    backend, guest = vmem_guest.backend, vmem_guest.guest
    ctl = guest.control
    assert ctl.alloc(FIRST_MIB) == FIRST_MIB  # fits in the boot memory (the guest sees ~150 MiB of it)
    backend.set_target(guest.name, BOOT + 300 * MiB)
    wait_for(lambda: plugged(vmem_guest), lambda p: p == 300 * MiB, PLUG_TIMEOUT_S, "300 MiB plugged")
    held_mib = FIRST_MIB + MORE_MIB
    assert ctl.alloc(MORE_MIB) == held_mib  # more than the boot memory holds: it needs the plugged blocks
    assert ctl.held()["alive"] == 1
    # Asked to shrink below what the guest uses, the guest unplugs only what it can free: no OOM kill.
    backend.set_target(guest.name, BOOT + 20 * MiB)
    g, _ = wait_for(
        lambda: backend.guest(guest.name), lambda g: g.virtio_mem.plugged_bytes < 300 * MiB, 20, "some unplug"
    )
    held = ctl.held()
    assert held["alive"] == 1 and held["held"] == held_mib
    assert ctl.oomkills() == 0
    used = ctl.meminfo()["MemTotal"] - ctl.meminfo()["MemAvailable"]
    assert g.actual_bytes is not None and g.actual_bytes > held_mib * MiB and used >= held_mib * MiB
    ctl.free_all()
    wait_for(lambda: plugged(vmem_guest), lambda p: p == 20 * MiB, UNPLUG_RETRY_S, "unplugged once freed")
    kept = g.virtio_mem.plugged_bytes // MiB
    print(f"{vmem_guest.kind}: held {held_mib} MiB through a shrink to +20 MiB; {kept} MiB stayed plugged")
