"""Talk to the agent inside a test guest over its second serial port (a unix socket on the host).

The wire protocol is one line per request and per reply, tagged with an id (see guest/agent.c). Every
request id carries a random per-client token, because a reconnecting client may find replies to an
earlier connection's requests still buffered in the socket: only the line with our exact id is ours.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autoballoon.rig.errors import RigError
from autoballoon.units import KiB, MiB

REQUEST_TIMEOUT_S = 30.0
#: Allocation waits until the guest has touched every page; TCG does ~100-300 MiB/s.
ALLOC_TIMEOUT_S = 150.0
PING_INTERVAL_S = 0.5
MS_PER_S = 1000.0


class GuestCommandError(RigError):
    """The agent answered ``err`` (for example the hog was OOM-killed during an allocation)."""


@dataclass(frozen=True, slots=True)
class GuestSample:
    """One ``sample`` of what the guest sees, in bytes, counts and seconds (see guest/agent.c).

    A figure the guest kernel does not offer (no PSI, no swap) is -1, as the agent sends it.
    """

    guest_time_s: float  # the guest's CLOCK_MONOTONIC
    mem_total: int
    mem_available: int
    mem_free: int
    anon: int  # AnonPages: what processes hold, the workload included
    cached: int  # Cached (page cache, shmem included)
    shmem: int  # Shmem (the initramfs lives here: cache the guest can never drop)
    swap_total: int
    swap_free: int
    oom_kill: int
    pswpin: int
    pswpout: int
    pgmajfault: int
    psi_some_us: int
    psi_full_us: int
    held: int  # what the agent's memory hog holds now
    hog_target: int  # what it is growing or shrinking towards
    hog_alive: bool  # False once the OOM killer took it (until the next grow)
    #: Reclaim counters of /proc/vmstat, cumulative pages: refaults of evicted anon and file pages (the
    #: working set coming back), pages reclaimed and scanned (anon plus file).
    refault_anon: int
    refault_file: int
    pgsteal: int
    pgscan: int

    @classmethod
    def from_fields(cls, f: dict[str, int]) -> GuestSample:
        def kib(key: str) -> int:
            return f[key] * KiB if f[key] >= 0 else -1

        return cls(
            guest_time_s=f["t_ms"] / MS_PER_S,
            mem_total=kib("mem_total_kb"),
            mem_available=kib("mem_available_kb"),
            mem_free=kib("mem_free_kb"),
            anon=kib("anon_kb"),
            cached=kib("cached_kb"),
            shmem=kib("shmem_kb"),
            swap_total=kib("swap_total_kb"),
            swap_free=kib("swap_free_kb"),
            oom_kill=f["oom_kill"],
            pswpin=f["pswpin"],
            pswpout=f["pswpout"],
            pgmajfault=f["pgmajfault"],
            psi_some_us=f["psi_some_us"],
            psi_full_us=f["psi_full_us"],
            held=f["held"] * MiB,
            hog_target=f["target"] * MiB,
            hog_alive=bool(f["alive"]),
            refault_anon=f["refault_anon"],
            refault_file=f["refault_file"],
            pgsteal=f["pgsteal"],
            pgscan=f["pgscan"],
        )


def wire_mib(size: int) -> int:
    """Bytes as the agent's whole MiB (its hog holds 1 MiB chunks), rounded to the nearest."""
    return (size + MiB // 2) // MiB


class GuestControl:
    """A client for one guest's control channel; thread-safe, reconnects when the socket drops."""

    def __init__(self, socket_path: Path | str, name: str = "") -> None:
        self.path = Path(socket_path)
        self.name = name or self.path.stem
        self._token = secrets.token_hex(3)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = b""

    # -- plumbing -------------------------------------------------------------------------------------

    def _connect(self, deadline: float) -> socket.socket:
        if self._sock is not None:
            return self._sock
        last: OSError | None = None
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                last = exc
                time.sleep(0.1)
                continue
            self._sock = sock
            self._buffer = b""
            return sock
        raise RigError(f"guest {self.name}: cannot connect to control socket {self.path}: {last}")

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def _read_reply(self, sock: socket.socket, request_id: str, deadline: float) -> str | None:
        """The payload of the reply line for ``request_id``; None on timeout. Other lines are stale."""
        prefix = f"{request_id} ".encode()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                line = line.strip(b"\r")
                if line.startswith(prefix):
                    return line[len(prefix) :].decode(errors="replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("control socket closed by QEMU")
            self._buffer += chunk

    def request(self, *words: object, timeout: float = REQUEST_TIMEOUT_S) -> str:
        """Send one command; return the reply payload after ``ok``; raise on ``err`` or timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            request_id = f"{self._token}-{next(self._ids)}"
            line = " ".join([request_id, *(str(w) for w in words)]) + "\n"
            sock = self._connect(deadline)
            try:
                sock.sendall(line.encode())
                payload = self._read_reply(sock, request_id, deadline)
            except OSError as exc:
                self._drop()
                raise RigError(f"guest {self.name}: control channel failed on {words!r}: {exc}") from exc
        if payload is None:
            raise RigError(f"guest {self.name}: no reply to {' '.join(map(str, words))!r} in {timeout:.0f} s")
        status, _, rest = payload.partition(" ")
        if status != "ok":
            raise GuestCommandError(f"guest {self.name}: {' '.join(map(str, words))!r} failed: {rest}")
        return rest

    @staticmethod
    def _fields(payload: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in payload.split():
            key, sep, value = item.partition("=")
            if sep:
                out[key] = int(value)
        return out

    # -- commands -------------------------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> float:
        """Ping until the agent answers; returns the seconds it took. Raises RigError on timeout."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            try:
                self.request("ping", timeout=PING_INTERVAL_S)
                return time.monotonic() - start
            except RigError:
                if time.monotonic() >= deadline:
                    raise
                # The connect itself may have failed before QEMU created the socket: don't spin.
                time.sleep(0.05)

    def ping(self) -> dict[str, int]:
        return self._fields(self.request("ping"))

    def alloc(self, mib: int, rate_mib_s: int | None = None) -> int:
        """Allocate and touch ``mib`` MiB more and keep it; returns MiB held (immediately if rated)."""
        args: list[object] = ["alloc", mib] + ([rate_mib_s] if rate_mib_s else [])
        return self._fields(self.request(*args, timeout=ALLOC_TIMEOUT_S))["held"]

    def free(self, mib: int) -> int:
        """Give ``mib`` MiB back to the guest kernel; returns MiB still held."""
        return self._fields(self.request("free", mib, timeout=ALLOC_TIMEOUT_S))["held"]

    def free_all(self) -> int:
        return self._fields(self.request("free", "all", timeout=ALLOC_TIMEOUT_S))["held"]

    def held(self) -> dict[str, int]:
        """``held`` and ``target`` MiB of the memory hog, and ``alive`` (0 after an OOM kill)."""
        return self._fields(self.request("held"))

    def meminfo(self) -> dict[str, int]:
        """The guest's /proc/meminfo, in **bytes** (the kernel prints kB = KiB)."""
        return {key: value * KiB for key, value in self._fields(self.request("meminfo")).items()}

    def oomkills(self) -> int:
        """The guest kernel's cumulative OOM-kill count (/proc/vmstat oom_kill)."""
        return int(self.request("oomkills"))

    def sample(self, timeout: float = REQUEST_TIMEOUT_S) -> GuestSample:
        """What the guest sees now: meminfo, OOM kills, swap and PSI counters, the hog's state."""
        return GuestSample.from_fields(self._fields(self.request("sample", timeout=timeout)))

    def grow(self, size: int, rate_bytes_s: int = 0) -> None:
        """Have the hog take ``size`` bytes more, at ``rate_bytes_s`` (0: as fast as the guest can touch
        them); answers at once, the hog works on in the background (watch :meth:`sample`)."""
        rate = max(1, wire_mib(rate_bytes_s)) if rate_bytes_s > 0 else 0
        self.request("grow", wire_mib(size), rate)

    def shrink(self, size: int | None = None) -> None:
        """Have the hog give ``size`` bytes back to the guest kernel (None: all); answers at once."""
        self.request("shrink", "all" if size is None else wire_mib(size))

    def cpuburn(self, on: bool) -> None:
        """Burn one vCPU flat out (on) or stop (off)."""
        self.request("cpuburn", "on" if on else "off")

    def burncpu_when_ballooned(self, on: bool) -> None:
        """While on, burn CPU whenever the guest's MemTotal is below its boot MemTotal (a sick guest)."""
        self.request("burncpu-when-ballooned", "on" if on else "off")

    def app_start(self, *args: str) -> None:
        """Start the production-like guest's application driver (``ab-app ARGS``); answers at once."""
        self.request("app", *args)

    def app_result(self) -> dict[str, str] | None:
        """The driver's result (``key=value`` words) once it has finished; None while it runs.

        Raises :class:`GuestCommandError` when it ended without a result (its log in the guest says why).
        """
        try:
            payload = self.request("appresult")
        except GuestCommandError as exc:
            if str(exc).endswith("failed: running"):
                return None
            raise
        return dict(item.partition("=")[::2] for item in payload.split())

    def close(self) -> None:
        with self._lock:
            self._drop()
