"""The rig itself on this host: libvirt keeps its QEMU capabilities (boots take seconds, not a minute),
guest consoles stay clean, and a swap disk reaches the guest."""

from __future__ import annotations

import grp
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from autoballoon.units import MiB
from tests.real.conftest import Rig

pytestmark = pytest.mark.realvm

KVM = Path("/dev/kvm")
#: A boot takes 3-10 s on 2 busy cores; a libvirtd that probes QEMU again first takes a minute or more.
BOOT_LIMIT_S = 30.0
SWAP = 128 * MiB
CONSOLE_WAIT_S = 3.0


def test_dev_kvm_is_usable_by_libvirts_qemu_user() -> None:
    if not KVM.exists():
        pytest.skip("this host has no /dev/kvm, so libvirt has nothing to probe")
    st = KVM.stat()
    assert (
        grp.getgrgid(st.st_gid).gr_name == "kvm" and st.st_mode & stat.S_IRWXG == stat.S_IRGRP | stat.S_IWGRP
    ), f"/dev/kvm is {stat.filemode(st.st_mode)} group {st.st_gid}: scripts/setup-rig makes it root:kvm 0660"


def test_a_guest_boots_within_seconds(rig: Rig, make_guests: Any) -> None:
    started = time.monotonic()
    make_guests(1)
    took = time.monotonic() - started
    print(f"one guest booted in {took:.1f} s")
    assert took < BOOT_LIMIT_S, "libvirtd probes QEMU before every start? see scripts/setup-rig (/dev/kvm)"


def test_the_console_carries_no_errors_and_swap_is_on(make_guests: Any) -> None:
    plain, swapped = make_guests(1) + make_guests(1, swap_bytes=SWAP)
    time.sleep(CONSOLE_WAIT_S)  # the vCPU-onlining loop runs every second
    for guest in (plain, swapped):
        console = guest.console_log.read_text(errors="replace")
        assert "can't open" not in console and "failed" not in console, console[-2000:]
    assert plain.control.sample().swap_total == 0
    total = swapped.control.sample().swap_total
    assert SWAP - MiB <= total <= SWAP, total  # mkswap keeps one page for its header
