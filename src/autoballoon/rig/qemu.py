"""Rig guests as plain QEMU processes, without libvirt: what the ``qmp://`` backend is tested on.

Plain QEMU is how many hosts run VMs (scripts, systemd units, Proxmox VE's ``qemu-server``), so the rig
boots the same guest as :mod:`.domains` (Debian's cloud kernel, the busybox initramfs, the agent on the
second serial port), with the command line libvirt would write for it, plus a QMP socket
(``-qmp unix:…,server=on,wait=off``) and a pid file: the layout Proxmox uses in ``/run/qemu-server``
(``<vmid>.qmp`` beside ``<vmid>.pid``).

Guests are named ``abtest-<pid>-<n>`` like libvirt rig guests; each runs as a child of the process that
booted it and is stopped by its PID (SIGTERM, then SIGKILL) when the session ends or the test is done.
Leftovers of sessions that died are found by their pid files and stopped by :func:`sweep`, after
checking that the PID still runs QEMU with that guest's name on its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoballoon.hostinfo import pid_alive, read_pidfile
from autoballoon.rig import accel
from autoballoon.rig.control import GuestControl
from autoballoon.rig.domains import (
    BOOT_TIMEOUT_S,
    EMULATOR,
    KERNEL_CMDLINE,
    NAME_RE,
    Guest,
    GuestSpec,
    domain_xml,
    new_name,
    run_dir,
    wait_booted,
)
from autoballoon.rig.errors import RigError
from autoballoon.rig.image import GuestImage, build_image
from autoballoon.units import KiB, MiB

#: QMP sockets, pid files and QEMU's own log of rig guests, unless a spec names another directory.
QMP_SUBDIR = "qemu"
QMP_SUFFIX = ".qmp"
PID_SUFFIX = ".pid"
#: The id libvirt gives the balloon (so its QOM path is /machine/peripheral/balloon0); None boots an
#: anonymous balloon (/machine/peripheral-anon/device[N]), which a QMP client must discover.
BALLOON_ID = "balloon0"
VIRTIO_MEM_ID = "vmem0"
DIMM_ID = "dimm0"
#: Linux's memory-block size on x86-64 is 128 MiB, but virtio-mem plugs in sub-blocks; QEMU's default
#: block size for anonymous RAM is the host's transparent huge page size, 2 MiB.
VIRTIO_MEM_BLOCK = 2 * MiB
#: QEMU places virtio-mem memory above 4 GiB, and a Linux guest that has memory above 4 GiB sets up a
#: 64 MiB bounce buffer (SWIOTLB) for 32-bit DMA at boot, taken from its boot memory and zeroed, so
#: resident on the host: measured 60 MiB more RSS, and 60 MiB less MemTotal, for a 256 MiB guest. The
#: rig's virtio devices do 64-bit DMA, so the guest needs none.
VIRTIO_MEM_CMDLINE = "swiotlb=noforce"
STOP_TIMEOUT_S = 10.0
QMP_TIMEOUT_S = 10.0
POLL_S = 0.05
#: What a plain-QEMU guest leaves in its directory besides the control socket, console log and swap.
_QEMU_FILES = (QMP_SUFFIX, PID_SUFFIX, ".qemu.log")


@dataclass(frozen=True, slots=True)
class VirtioMemSpec:
    """A virtio-mem device on top of the guest's boot memory: ``region_bytes`` at most, plugged in blocks of
    ``block_bytes``, ``requested_bytes`` plugged at boot."""

    region_bytes: int
    block_bytes: int = VIRTIO_MEM_BLOCK
    requested_bytes: int = 0


@dataclass(frozen=True, slots=True)
class QemuSpec:
    """A plain-QEMU rig guest: the libvirt rig's :class:`GuestSpec` plus what only QEMU's command line says.

    ``directory`` and ``stem`` place the QMP socket and pid file (``<directory>/<stem>.qmp``), for a
    Proxmox-style directory of sockets named by VM id; by default they go to the rig's run directory
    under the guest's name. ``vm_name`` is QEMU's ``-name`` (what ``query-name`` answers); None leaves
    it unset, as Proxmox does not (it passes ``-name NAME``) but a hand-written command line may.
    """

    guest: GuestSpec = field(default_factory=GuestSpec)
    balloon_id: str | None = BALLOON_ID
    virtio_mem: VirtioMemSpec | None = None
    directory: Path | None = None
    stem: str | None = None
    vm_name: str | None = None
    set_name: bool = True
    dimm_bytes: int = 0  # a pc-dimm of this size beside the boot memory (Proxmox's ``hotplug: memory``)


@dataclass
class QemuGuest(Guest):
    """A running plain-QEMU guest: a :class:`Guest` plus its process, QMP socket and pid file."""

    qemu_spec: QemuSpec = field(default_factory=QemuSpec)
    qmp: Path = Path()
    pidfile: Path = Path()
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RigError(f"guest {self.name} has no QEMU process")
        return self.process.pid


def qmp_dir() -> Path:
    """Where plain-QEMU rig guests keep their QMP sockets and pid files by default."""
    path = run_dir() / QMP_SUBDIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def qemu_argv(
    name: str, spec: QemuSpec, image: GuestImage, rundir: Path, qmp: Path, pidfile: Path
) -> list[str]:
    """QEMU's command line for one rig guest: what :func:`autoballoon.rig.domains.domain_xml` asks of
    libvirt (TCG, direct kernel boot, console log, control serial, balloon, optional swap disk), plus a
    QMP socket and a pid file, and optionally a virtio-mem device on top of the boot memory."""
    g = spec.guest
    memory = f"{g.memory_bytes // MiB}M"
    argv = [EMULATOR, "-accel", accel.choose().accel, "-machine", "pc", "-nodefaults", "-no-user-config"]
    argv += ["-display", "none", "-no-reboot"]
    if spec.set_name:
        argv += ["-name", spec.vm_name or name]
    if spec.virtio_mem is not None or spec.dimm_bytes:
        region = spec.virtio_mem.region_bytes if spec.virtio_mem is not None else 0
        top = (g.memory_bytes + region + spec.dimm_bytes) // MiB
        memory += f",slots=1,maxmem={top}M" if spec.dimm_bytes else f",maxmem={top}M"
    argv += ["-m", memory, "-smp", f"{g.vcpus},maxcpus={g.max_vcpus}"]
    cmdline = KERNEL_CMDLINE + (f" {VIRTIO_MEM_CMDLINE}" if spec.virtio_mem is not None else "")
    argv += ["-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline]
    argv += ["-serial", f"file:{rundir / f'{name}.console.log'}"]
    argv += ["-serial", f"unix:{rundir / f'{name}.ctl'},server=on,wait=off"]
    if g.swap_bytes:
        swap = rundir / f"{name}.swap"
        argv += ["-drive", f"file={swap},if=virtio,format=raw,cache=unsafe"]
    if g.balloon_model != "none":
        props = [
            "virtio-balloon-pci",
            f"deflate-on-oom={'on' if g.autodeflate else 'off'}",
            f"free-page-reporting={'on' if g.free_page_reporting else 'off'}",
        ]
        if spec.balloon_id is not None:
            props.insert(1, f"id={spec.balloon_id}")
        argv += ["-device", ",".join(props)]
    vmem = spec.virtio_mem
    if vmem is not None:
        backend = f"{VIRTIO_MEM_ID}-ram"
        argv += ["-object", f"memory-backend-ram,id={backend},size={vmem.region_bytes}"]
        argv += [
            "-device",
            f"virtio-mem-pci,id={VIRTIO_MEM_ID},memdev={backend},block-size={vmem.block_bytes},"
            f"requested-size={vmem.requested_bytes}",
        ]
    if spec.dimm_bytes:
        argv += ["-object", f"memory-backend-ram,id={DIMM_ID}-ram,size={spec.dimm_bytes}"]
        argv += ["-device", f"pc-dimm,id={DIMM_ID},memdev={DIMM_ID}-ram"]
    argv += ["-qmp", f"unix:{qmp},server=on,wait=off", "-pidfile", str(pidfile)]
    return argv


async def _qmp_set_stats_period(qmp: Path, balloon_id: str | None, period: int) -> None:
    """What libvirt does for ``<stats period>`` after it starts QEMU: set the balloon's polling interval."""
    from qemu.qmp import QMPClient

    client = QMPClient(qmp.stem)
    await client.connect(str(qmp))
    try:
        if balloon_id is not None:
            path = f"/machine/peripheral/{balloon_id}"
        else:
            entries = await client.execute("qom-list", {"path": "/machine/peripheral-anon"})
            assert isinstance(entries, list)
            names = [e["name"] for e in entries if str(e.get("type", "")).startswith("child<virtio-balloon")]
            if not names:
                raise RigError(f"{qmp}: no anonymous balloon device to set a stats period on")
            path = f"/machine/peripheral-anon/{names[0]}"
        await client.execute(
            "qom-set", {"path": path, "property": "guest-stats-polling-interval", "value": period}
        )
    finally:
        await client.disconnect()


def _wait_socket(path: Path, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + QMP_TIMEOUT_S
    while not path.exists():
        if process.poll() is not None:
            text = ""
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace")[-2000:]
            raise RigError(
                f"QEMU for {name} exited ({process.returncode}) before its QMP socket appeared:\n{text}"
            )
        if time.monotonic() > deadline:
            raise RigError(f"QEMU for {name}: no QMP socket {path} after {QMP_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def start(image: GuestImage, spec: QemuSpec, name: str | None = None) -> QemuGuest:
    """Start one QEMU process for a guest; returns once its QMP socket answers, before the guest booted."""
    name = name or new_name()
    rundir = run_dir()
    directory = spec.directory or qmp_dir()
    stem = spec.stem or name
    qmp, pidfile, log = (
        directory / f"{stem}{QMP_SUFFIX}",
        directory / f"{stem}{PID_SUFFIX}",
        rundir / f"{name}.qemu.log",
    )
    _remove_files(name, rundir, directory, stem)
    g = spec.guest
    if g.swap_bytes:
        with (rundir / f"{name}.swap").open("wb") as swap:
            swap.truncate(g.swap_bytes)
    argv = qemu_argv(name, spec, image, rundir, qmp, pidfile)
    with log.open("wb") as out:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise RigError(f"cannot start {argv[0]} for {name}: {exc}; run scripts/setup-rig") from exc
    guest = QemuGuest(
        name=name,
        spec=g,
        control=GuestControl(rundir / f"{name}.ctl", name),
        console_log=rundir / f"{name}.console.log",
        qemu_spec=spec,
        qmp=qmp,
        pidfile=pidfile,
        process=process,
    )
    try:
        _wait_socket(qmp, process, name, log)
        if g.balloon_model != "none" and g.stats_period:
            asyncio.run(
                asyncio.wait_for(_qmp_set_stats_period(qmp, spec.balloon_id, g.stats_period), QMP_TIMEOUT_S)
            )
    except BaseException:
        stop(guest)
        raise
    return guest


def boot(image: GuestImage, specs: Sequence[QemuSpec]) -> list[QemuGuest]:
    """Start several guests at once and wait until every agent answers; on failure none is left behind."""
    guests: list[QemuGuest] = []
    try:
        for spec in specs:
            guests.append(start(image, spec))
        wait_booted(guests, BOOT_TIMEOUT_S)
    except BaseException:
        for guest in guests:
            stop(guest)
        raise
    return guests


def _stop_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def stop(guest: QemuGuest) -> None:
    """Stop the guest's QEMU (SIGTERM, then SIGKILL after a while), by its PID, and remove its files."""
    guest.control.close()
    process = guest.process
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
    _remove_files(guest.name, run_dir(), guest.qmp.parent, guest.qmp.stem)


def kill(guest: QemuGuest) -> None:
    """Kill the guest's QEMU at once (SIGKILL), as a crash would: its socket file stays behind."""
    if guest.process is not None and guest.process.poll() is None:
        guest.process.kill()
        guest.process.wait(STOP_TIMEOUT_S)


def _remove_files(name: str, rundir: Path, directory: Path, stem: str) -> None:
    for path in (
        *(rundir / f"{name}{suffix}" for suffix in (".ctl", ".console.log", ".swap", ".qemu.log")),
        directory / f"{stem}{QMP_SUFFIX}",
        directory / f"{stem}{PID_SUFFIX}",
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _runs_guest(pid: int, name: str) -> bool:
    """Whether ``pid`` is a QEMU whose command line names this guest (a recycled PID is left alone)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(argv)
        and Path(argv[0].decode(errors="replace")).name.startswith("qemu-system")
        and any(name.encode() in arg for arg in argv)
    )


def sweep(directory: Path | None = None) -> list[str]:
    """Stop plain-QEMU rig guests left by rig sessions that no longer exist; returns their names."""
    directory = directory or qmp_dir()
    removed = []
    for pidfile in sorted(directory.glob(f"*{PID_SUFFIX}")):
        name = pidfile.name.removesuffix(PID_SUFFIX)
        match = NAME_RE.match(name)
        if match is None or pid_alive(int(match.group("pid"))):
            continue
        pid = read_pidfile(pidfile)
        if pid is not None and _runs_guest(pid, name):
            _stop_pid(pid)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while _runs_guest(pid, name) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if _runs_guest(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _remove_files(name, run_dir(), directory, name)
        removed.append(name)
    return removed


@dataclass
class QemuRig:
    """One user of the plain-QEMU rig: the guest image and every guest it started (stopped at close)."""

    image: GuestImage
    guests: list[QemuGuest] = field(default_factory=list)

    def boot(self, specs: Sequence[QemuSpec]) -> list[QemuGuest]:
        guests = boot(self.image, specs)
        self.guests.extend(guests)
        return guests

    def stop(self, guest: QemuGuest) -> None:
        stop(guest)
        if guest in self.guests:
            self.guests.remove(guest)

    def close(self) -> list[str]:
        """Stop every guest; returns those whose QEMU still runs afterwards (``name[pid]``): empty unless a
        stop failed."""
        for guest in list(self.guests):
            with contextlib.suppress(Exception):
                self.stop(guest)
        return [
            f"{g.name}[{g.pid}]" for g in self.guests if g.process is not None and g.process.poll() is None
        ]


def open_qemu_rig() -> QemuRig:
    """Build (or reuse) the guest image and stop leftovers of dead sessions; RigError if QEMU is missing."""
    if not Path(EMULATOR).exists():
        raise RigError(f"{EMULATOR} is not installed; run scripts/setup-rig (qemu-system-x86)")
    rig = QemuRig(image=build_image())
    sweep()
    return rig


def with_virtio_mem(xml: str, vmem: VirtioMemSpec) -> str:
    """A rig domain's XML (from :func:`autoballoon.rig.domains.domain_xml`) with a virtio-mem device on top
    of its memory, as libvirt needs it: ``<maxMemory slots>`` for the device's address space, a NUMA
    cell holding the boot memory (and every vCPU), and ``<memory>`` counting the device's region."""
    root = ET.fromstring(xml)
    cmdline = root.find("os/cmdline")
    if cmdline is not None:
        cmdline.text = f"{cmdline.text or ''} {VIRTIO_MEM_CMDLINE}".strip()
    memory = root.find("memory")
    if memory is None or memory.text is None:
        raise RigError("rig domain XML without <memory>")
    boot_kib = int(memory.text)
    top_kib = boot_kib + vmem.region_bytes // KiB
    memory.text = str(top_kib)
    maximum = ET.Element("maxMemory", slots="1", unit="KiB")
    maximum.text = str(top_kib)
    root.insert(list(root).index(memory), maximum)
    vcpu = root.find("vcpu")
    cpus = int(vcpu.text or "1") if vcpu is not None else 1
    numa = ET.SubElement(ET.SubElement(root, "cpu"), "numa")
    ET.SubElement(numa, "cell", id="0", cpus=f"0-{cpus - 1}", memory=str(boot_kib), unit="KiB")
    devices = root.find("devices")
    if devices is None:
        raise RigError("rig domain XML without <devices>")
    target = ET.SubElement(ET.SubElement(devices, "memory", model="virtio-mem"), "target")
    for tag, size in (
        ("size", vmem.region_bytes),
        ("block", vmem.block_bytes),
        ("requested", vmem.requested_bytes),
    ):
        ET.SubElement(target, tag, unit="KiB").text = str(size // KiB)
    ET.SubElement(target, "node").text = "0"
    return ET.tostring(root, encoding="unicode")


def start_libvirt_virtio_mem(conn: Any, image: GuestImage, spec: GuestSpec, vmem: VirtioMemSpec) -> Guest:
    """Start a transient libvirt rig guest with a virtio-mem device; returns before it has booted.

    The libvirt rig's :func:`autoballoon.rig.domains.start` writes its XML itself; this is the same
    guest with :func:`with_virtio_mem` applied (remove it with :func:`autoballoon.rig.domains.destroy`).
    """
    import libvirt

    name = new_name()
    rundir = run_dir()
    xml = with_virtio_mem(domain_xml(name, spec, image, rundir), vmem)
    try:
        conn.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise RigError(f"cannot start test domain {name} with virtio-mem: {exc}") from exc
    return Guest(name, spec, GuestControl(rundir / f"{name}.ctl", name), rundir / f"{name}.console.log")
