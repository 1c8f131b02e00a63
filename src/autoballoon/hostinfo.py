"""Host memory and load signals from /proc and /sys: pure parsers plus a few readers.

The parsers take the text of a kernel file and return plain values, so they are tested on samples without
a host. The readers (:func:`read_host_info`, :func:`process_rss`, :func:`threads_cpu_ns`,
:func:`read_pidfile`) are the only functions that touch the file system; they take the root as an
argument (tests point it at a fake tree) and give ``None`` when a file is absent (no PSI on old kernels,
no KSM in containers, no thermal_throttle on virtual CPUs, a process that has exited).

Per-process figures exist because what ballooning gives back is measured where it matters, at the host:
a QEMU process's resident memory (``VmRSS``) falls only when the host really got pages back (an inflated
balloon over VFIO or huge pages may not free anything; free page reporting frees pages the balloon never
touched).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from autoballoon.model import GuestSnapshot, HostSnapshot
from autoballoon.units import KiB

#: Sizes in /proc/meminfo and /proc/PID/status are printed as "kB" but are KiB.
MEMINFO_UNIT_BYTES = KiB
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Psi:
    """One resource's pressure (``/proc/pressure/memory``): percentages and cumulative stall µs."""

    some_avg10: float
    some_avg60: float
    some_avg300: float
    some_total_us: int
    full_avg10: float | None = None
    full_avg60: float | None = None
    full_avg300: float | None = None
    full_total_us: int | None = None


@dataclass(frozen=True, slots=True)
class HostInfo:
    """Everything the host says about itself that a HostSnapshot carries."""

    mem_total: int
    mem_available: int
    swap_total: int | None = None
    swap_free: int | None = None
    psi: Psi | None = None
    ksm_saved_bytes: int | None = None
    ksm_running: bool | None = None
    load_avg1: float | None = None
    cpu_count: int = 1
    thermal_throttle_count: int | None = None
    hostname: str = ""
    watermark_bytes: int | None = None  # the zones' low free watermarks together (see parse_zoneinfo)


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes per field (fields without a unit, like HugePages_Total, stay counts)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        scale = MEMINFO_UNIT_BYTES if len(parts) > 1 and parts[1].lower() == "kb" else 1
        out[key.strip()] = value * scale
    return out


def parse_zoneinfo(text: str, page_size: int) -> int | None:
    """The sum of every zone's *low* watermark in ``/proc/zoneinfo``, in bytes; None when it has none.

    Below its low watermark a zone wakes kswapd: the host starts reclaiming and swapping for itself
    (below *min*, every allocation reclaims first). That is the line the host's hard minimum is drawn
    above. The figures are pages; ``min_free_kbytes`` and ``watermark_scale_factor`` set them.
    """
    total, seen = 0, False
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "low":
            try:
                total += int(words[1])
            except ValueError:
                return None
            seen = True
    return total * page_size if seen else None


def _psi_line(fields: list[str]) -> dict[str, str]:
    return dict(f.split("=", 1) for f in fields if "=" in f)


def parse_psi(text: str) -> Psi | None:
    """``/proc/pressure/<resource>``; None when the text has no ``some`` line (PSI disabled)."""
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("some", "full"):
            lines[words[0]] = _psi_line(words[1:])
    some = lines.get("some")
    if some is None:
        return None
    try:
        full = lines.get("full")
        return Psi(
            some_avg10=float(some["avg10"]),
            some_avg60=float(some["avg60"]),
            some_avg300=float(some["avg300"]),
            some_total_us=int(some["total"]),
            full_avg10=float(full["avg10"]) if full else None,
            full_avg60=float(full["avg60"]) if full else None,
            full_avg300=float(full["avg300"]) if full else None,
            full_total_us=int(full["total"]) if full else None,
        )
    except (KeyError, ValueError):
        return None


def parse_loadavg(text: str) -> float | None:
    """The one-minute load average from ``/proc/loadavg``."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def ksm_saved_bytes(pages_sharing: int, page_size: int) -> int:
    """Memory KSM saves: every *sharing* page is one page that would otherwise be a separate copy."""
    return pages_sharing * page_size


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _thermal_throttle_count(cpu_root: Path) -> int | None:
    """Sum of core and package throttle events over CPUs; None where the CPUs expose none (VMs)."""
    total = 0
    seen = False
    for directory in sorted(cpu_root.glob("cpu[0-9]*/thermal_throttle")):
        for name in ("core_throttle_count", "package_throttle_count"):
            value = _read_int(directory / name)
            if value is not None:
                total += value
                seen = True
    return total if seen else None


def read_host_info(root: Path = Path("/")) -> HostInfo:
    """Read the local host's signals under ``root`` (``/`` in production, a fake tree in tests)."""
    meminfo = parse_meminfo(_read(root / "proc/meminfo") or "")
    mem_total = meminfo.get("MemTotal", 0)
    psi_text = _read(root / "proc/pressure/memory")
    ksm = root / "sys/kernel/mm/ksm"
    pages_sharing = _read_int(ksm / "pages_sharing")
    ksm_run = _read_int(ksm / "run")
    load_text = _read(root / "proc/loadavg")
    zoneinfo = _read(root / "proc/zoneinfo")
    page_size = os.sysconf("SC_PAGE_SIZE")
    return HostInfo(
        mem_total=mem_total,
        # MemAvailable exists since Linux 3.14; MemFree is a poor but safe fallback.
        mem_available=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        swap_total=meminfo.get("SwapTotal"),
        swap_free=meminfo.get("SwapFree"),
        psi=parse_psi(psi_text) if psi_text is not None else None,
        ksm_saved_bytes=(ksm_saved_bytes(pages_sharing, page_size) if pages_sharing is not None else None),
        ksm_running=None if ksm_run is None else ksm_run == 1,
        load_avg1=parse_loadavg(load_text) if load_text is not None else None,
        cpu_count=os.cpu_count() or 1,
        thermal_throttle_count=_thermal_throttle_count(root / "sys/devices/system/cpu"),
        hostname=socket.gethostname(),
        watermark_bytes=parse_zoneinfo(zoneinfo, page_size) if zoneinfo is not None else None,
    )


def local_host_snapshot(guests: tuple[GuestSnapshot, ...], time: float, wall_time: float) -> HostSnapshot:
    """This host's snapshot around ``guests``: what a backend whose VMs run here (libvirt's local URIs,
    QMP sockets) reports of the host, read from /proc and /sys."""
    info = read_host_info()
    psi = info.psi
    return HostSnapshot(
        time=time,
        wall_time=wall_time,
        mem_total=info.mem_total,
        mem_available=info.mem_available,
        guests=guests,
        swap_total=info.swap_total,
        swap_free=info.swap_free,
        psi_some_avg10=psi.some_avg10 if psi else None,
        psi_full_avg10=psi.full_avg10 if psi else None,
        ksm_saved_bytes=info.ksm_saved_bytes,
        ksm_running=info.ksm_running,
        load_avg1=info.load_avg1,
        cpu_count=info.cpu_count,
        thermal_throttle_count=info.thermal_throttle_count,
        hostname=info.hostname,
        watermark_bytes=info.watermark_bytes,
    )


def parse_status_rss(text: str) -> int | None:
    """``VmRSS`` of a ``/proc/PID/status`` text in bytes; None for a kernel thread or a zombie (no line)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            try:
                return int(parts[1]) * MEMINFO_UNIT_BYTES
            except (IndexError, ValueError):
                return None
    return None


def process_rss(pid: int, root: Path = Path("/")) -> int | None:
    """The resident memory of process ``pid`` in bytes, or None when it has exited (or is unreadable)."""
    text = _read(root / f"proc/{pid}/status")
    return parse_status_rss(text) if text is not None else None


def parse_stat_cpu_ticks(text: str) -> int | None:
    """utime + stime (clock ticks) from a ``/proc/PID/task/TID/stat`` line.

    The command name (field 2) is in parentheses and may contain spaces or parentheses itself, so the
    fields are counted from the *last* ``)``.
    """
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        return None
    try:
        return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the whole line
    except ValueError:
        return None


def threads_cpu_ns(pid: int, tids: Iterable[int], root: Path = Path("/")) -> int | None:
    """CPU time (user + system) of some threads of ``pid`` in ns; None unless every thread was readable.

    For a QEMU process the threads are its vCPUs (``query-cpus-fast`` names them): their time is the
    guest's own CPU time, without QEMU's I/O and main-loop threads. A partial sum would look like a CPU
    time that went backwards, so one missing thread makes the whole figure unknown.
    """
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    total = 0
    seen = False
    for tid in tids:
        text = _read(root / f"proc/{pid}/task/{tid}/stat")
        ticks = parse_stat_cpu_ticks(text) if text is not None else None
        if ticks is None:
            return None
        total += ticks
        seen = True
    return total * NS_PER_S // ticks_per_s if seen else None


def read_pidfile(path: Path) -> int | None:
    """The PID in a pid file (QEMU's ``-pidfile``, libvirt's ``/run/libvirt/qemu/NAME.pid``), or None."""
    text = _read(path)
    if text is None:
        return None
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether a process exists (one of another user's counts: it is alive, just not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: ``struct ucred`` (pid, uid, gid) as ``SO_PEERCRED`` returns it on Linux.
_UCRED = struct.Struct("3i")


def peer_pid(sock: socket.socket) -> int | None:
    """The PID of the process at the other end of a connected unix socket (``SO_PEERCRED``), or None.

    The kernel records it when the peer called ``listen()``/``connect()``, so for a QMP socket it is the
    QEMU process itself, with no pid file to trust or go stale.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, _uid, _gid = _UCRED.unpack(raw)
    return pid if pid > 0 else None
