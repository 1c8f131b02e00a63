"""Rig domains: define, boot (in parallel), and always remove them.

Every rig domain is named ``abtest-<pid>-<n>`` after the test process that made it, so that a sweep can
remove leftovers of dead sessions without touching guests of a session that is still running (several
engineers run the suite on one host at the same time).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import libvirt

from autoballoon.hostinfo import pid_alive
from autoballoon.rig import accel
from autoballoon.rig.control import GuestControl
from autoballoon.rig.debian import DebianImage
from autoballoon.rig.errors import RigError
from autoballoon.rig.image import GuestImage
from autoballoon.units import KiB, MiB

URI = "qemu:///system"
NAME_PREFIX = "abtest-"
NAME_RE = re.compile(r"^abtest-(?P<pid>\d+)-\d+$")
RUN_DIR = Path(os.environ.get("AUTOBALLOON_RIG_RUN", "/var/tmp/autoballoon-rig"))
GUEST_BYTES = 512 * MiB
GUEST_MAX_VCPUS = 2
STATS_PERIOD_S = 1
BOOT_TIMEOUT_S = 120.0
EMULATOR = "/usr/bin/qemu-system-x86_64"
#: no_timer_check: on a busy host a TCG guest's timer can miss Linux's IO-APIC check window at boot, and
#: the guest panics ("IO-APIC + timer doesn't work!", seen with 12 guests booting at load 12).
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 no_timer_check"
#: The production-like guest boots Debian's kernel and initramfs with its root on the virtio disk.
DEBIAN_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet panic=-1 no_timer_check systemd.show_status=false"
#: Debian's guest boots systemd and two services: under TCG, with several guests booting on two CPUs,
#: that takes minutes, not the busybox guest's seconds.
DEBIAN_BOOT_TIMEOUT_S = 420.0
#: The production-like guest's disk behaves like a cloud volume (the host's page cache is bypassed and
#: reads are limited), so that a page the balloon evicted costs a real read when the guest needs it again.
DISK_IOPS = 3000
DISK_BYTES_S = 125 * MiB
#: TCG's translated-code cache: QEMU sizes it by default at a quarter of the guest's RAM (1 GiB at most)
#: and it counts in QEMU's RSS, so a Debian guest under TCG looks larger to the host than its RAM.
TCG_CODE_CACHE_MIB = 128
#: What a guest leaves in the run directory: control socket, console log, swap disk, disk overlay.
_RUN_FILES = (".ctl", ".console.log", ".swap", ".qcow2")
_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """What a test or benchmark asks for; everything else is the rig's fixed, small, fast guest.

    ``swap_bytes`` > 0 gives the guest a swap disk of that size (a sparse file in the run directory on a
    virtio disk, which the guest's /init turns on); 0 means no swap, like the rig's guests always had.
    ``kind="debian"`` boots the production-like guest (:mod:`.debian`) instead of the busybox one.
    """

    kind: Literal["busybox", "debian"] = "busybox"

    memory_bytes: int = GUEST_BYTES
    swap_bytes: int = 0
    autodeflate: bool = False
    free_page_reporting: bool = False
    stats_period: int | None = STATS_PERIOD_S
    balloon_model: str = "virtio"
    persistent: bool = False
    vcpus: int = 1
    max_vcpus: int = GUEST_MAX_VCPUS


@dataclass
class Guest:
    """A running test guest: its libvirt name, its control channel, how long it took to boot."""

    name: str
    spec: GuestSpec
    control: GuestControl
    console_log: Path
    boot_seconds: float = 0.0


def quiet_libvirt() -> None:
    """libvirt prints every error to stderr by default; the rig handles (or raises) them itself."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def open_connection() -> libvirt.virConnect:
    """A connection to qemu:///system that is known to answer (one cheap round trip)."""
    conn = libvirt.open(URI)
    conn.getLibVersion()
    return conn


def connection_answers(conn: libvirt.virConnect | None) -> bool:
    """Whether ``conn`` still reaches libvirtd: isAlive() alone misses a daemon that restarted."""
    if conn is None:
        return False
    try:
        conn.getLibVersion()
    except libvirt.libvirtError:
        return False
    return True


def run_dir() -> Path:
    """Where QEMU (as libvirt-qemu) creates the control sockets and console logs: sticky and writable."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.chmod(0o1777)
    return RUN_DIR


def new_name() -> str:
    return f"{NAME_PREFIX}{os.getpid()}-{next(_counter)}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(
    name: str, spec: GuestSpec, image: GuestImage, rundir: Path, debian: DebianImage | None = None
) -> str:
    """The domain XML of a test guest: KVM or TCG, direct kernel boot, console log, control serial,
    balloon; for a Debian guest also its disk overlay."""
    if spec.kind == "debian" and debian is None:
        raise RigError("a Debian rig guest needs the Debian image (RigSession builds it)")
    kib = str(spec.memory_bytes // KiB)
    kvm = accel.choose().accel == "kvm"
    dom = ET.Element("domain", type="kvm" if kvm else "qemu")
    _sub(dom, "name", name)
    _sub(dom, "memory", kib, unit="KiB")
    _sub(dom, "currentMemory", kib, unit="KiB")
    _sub(dom, "vcpu", str(spec.max_vcpus), placement="static", current=str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kind == "debian" and debian is not None:
        _sub(os_el, "kernel", str(debian.kernel))
        _sub(os_el, "initrd", str(debian.initrd))
        _sub(os_el, "cmdline", DEBIAN_CMDLINE)
    else:
        _sub(os_el, "kernel", str(image.kernel))
        _sub(os_el, "initrd", str(image.initrd))
        _sub(os_el, "cmdline", KERNEL_CMDLINE)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    if kvm:
        _sub(dom, "cpu", mode="host-passthrough")
    elif spec.kind == "debian":
        _sub(_sub(features, "tcg"), "tb-cache", str(TCG_CODE_CACHE_MIB), unit="MiB")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "destroy")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _sub(devices, "emulator", EMULATOR)
    console = _sub(devices, "serial", type="file")
    _sub(console, "source", path=str(rundir / f"{name}.console.log"))
    _sub(console, "target", port="0")
    if spec.kind == "debian":
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", cache="none", io="native")
        _sub(disk, "source", file=str(rundir / f"{name}.qcow2"))
        _sub(disk, "target", dev="vda", bus="virtio")
        iotune = _sub(disk, "iotune")
        _sub(iotune, "total_iops_sec", str(DISK_IOPS))
        _sub(iotune, "total_bytes_sec", str(DISK_BYTES_S))
    elif spec.swap_bytes:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="raw", cache="unsafe")
        _sub(disk, "source", file=str(rundir / f"{name}.swap"))
        _sub(disk, "target", dev="vda", bus="virtio")
    channel = _sub(devices, "serial", type="unix")
    _sub(channel, "source", mode="bind", path=str(rundir / f"{name}.ctl"))
    _sub(channel, "target", port="1")
    balloon_attrs = {"model": spec.balloon_model}
    if spec.balloon_model != "none":
        if spec.autodeflate:
            balloon_attrs["autodeflate"] = "on"
        if spec.free_page_reporting:
            balloon_attrs["freePageReporting"] = "on"
    balloon = _sub(devices, "memballoon", **balloon_attrs)
    if spec.balloon_model != "none" and spec.stats_period:
        _sub(balloon, "stats", period=str(spec.stats_period))
    return ET.tostring(dom, encoding="unicode")


def _remove_files(name: str, rundir: Path) -> None:
    for suffix in _RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (rundir / f"{name}{suffix}").unlink()


def destroy(conn: libvirt.virConnect, name: str) -> None:
    """Remove a test domain completely (stop it, undefine it if persistent); absent is fine."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise RigError(f"cannot look up test domain {name} to remove it: {exc}") from exc
        _remove_files(name, RUN_DIR)
        return
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    _remove_files(name, RUN_DIR)


def sweep(conn: libvirt.virConnect) -> list[str]:
    """Remove test domains left by test processes that no longer exist; returns their names."""
    removed = []
    for dom in conn.listAllDomains(0):
        match = NAME_RE.match(dom.name())
        if match and not pid_alive(int(match.group("pid"))):
            destroy(conn, dom.name())
            removed.append(dom.name())
    return removed


def _overlay(base: Path, out: Path) -> None:
    """A copy-on-write overlay of the Debian image: the guest writes there, the image stays as built."""
    done = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RigError(f"qemu-img create {out} failed: {done.stderr.strip()}")


def start(
    conn: libvirt.virConnect,
    image: GuestImage,
    spec: GuestSpec,
    name: str | None = None,
    debian: DebianImage | None = None,
) -> Guest:
    """Define (if persistent) and start one guest; returns at once, before the guest has booted."""
    name = name or new_name()
    rundir = run_dir()
    _remove_files(name, rundir)
    if spec.swap_bytes:  # sparse: the host spends disk only on what the guest swaps out
        with (rundir / f"{name}.swap").open("wb") as swap:
            swap.truncate(spec.swap_bytes)
    xml = domain_xml(name, spec, image, rundir, debian)
    if spec.kind == "debian" and debian is not None:
        _overlay(debian.disk, rundir / f"{name}.qcow2")
    try:
        if spec.persistent:
            conn.defineXML(xml).create()
        else:
            conn.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        destroy(conn, name)
        raise RigError(f"cannot start test domain {name}: {exc}") from exc
    return Guest(name, spec, GuestControl(rundir / f"{name}.ctl", name), rundir / f"{name}.console.log")


def wait_booted(guests: Iterable[Guest], timeout: float = BOOT_TIMEOUT_S) -> None:
    """Wait until every guest's agent answers. The guests boot at the same time; this only waits."""
    started = time.monotonic()
    for guest in guests:
        limit = DEBIAN_BOOT_TIMEOUT_S if guest.spec.kind == "debian" else timeout
        remaining = max(1.0, limit - (time.monotonic() - started))
        try:
            guest.control.wait_ready(remaining)
        except RigError as exc:
            console = ""
            with contextlib.suppress(OSError):
                console = guest.console_log.read_text(errors="replace")[-2000:]
            raise RigError(f"{exc}\n--- console of {guest.name} ---\n{console}") from exc
        guest.boot_seconds = time.monotonic() - started


def boot(
    conn: libvirt.virConnect,
    image: GuestImage,
    specs: list[GuestSpec],
    debian: DebianImage | None = None,
) -> list[Guest]:
    """Start several guests at once and wait for all of them; on failure none is left behind."""
    guests: list[Guest] = []
    try:
        for spec in specs:
            guests.append(start(conn, image, spec, debian=debian))
        wait_booted(guests)
    except BaseException:
        for guest in guests:
            guest.control.close()
            destroy(conn, guest.name)
        raise
    return guests


def restart(conn: libvirt.virConnect, guest: Guest, timeout: float = BOOT_TIMEOUT_S) -> float:
    """Boot a persistent guest again from its (possibly edited) inactive XML; returns boot seconds."""
    dom = conn.lookupByName(guest.name)
    if dom.isActive():
        dom.destroy()
    guest.control.close()
    started = time.monotonic()
    dom.create()
    guest.control.wait_ready(timeout)
    guest.boot_seconds = time.monotonic() - started
    return guest.boot_seconds
