"""The monitor lifecycle of the QMP backend: which sockets there are, the connection to each, and what
is known about the QEMU behind it.

A QMP socket serves one client at a time, so by default the backend connects for each call and hangs up
when it is done (a few milliseconds per VM): Proxmox's own tools, an operator's script and other
``autoballoon`` commands keep working beside the daemon. The facts that never change while one QEMU
process runs (its name, its balloon's QOM path, the balloon's switches, its boot memory, its virtio-mem
device) are kept between connections, for as long as the socket file and the QEMU behind it (its PID,
from the socket's peer credentials) stay the same; a new QEMU on the same path is a new VM, which boots
at its full size, so the target the backend remembered for the old one is dropped.

A failure here is one of three package-level exceptions (no QEMU, a busy monitor, a connection that died
under a command); the backend turns each into an :mod:`autoballoon.errors` exception naming the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate

from autoballoon import hostinfo
from autoballoon.backends.qmp import wire
from autoballoon.backends.qmp.uri import Location, Mode
from autoballoon.model import GuestSnapshot

log = logging.getLogger(__name__)
T = TypeVar("T")


#: Connect, read QEMU's greeting and negotiate capabilities: QEMU answers in milliseconds even under TCG
#: load, so a socket that stays silent this long is held by another client.
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 10.0
EVENTS = ("BALLOON_CHANGE", "SHUTDOWN", "RESUME")
PID_SUFFIX = ".pid"


class _Gone(Exception):
    """No QEMU behind the socket: the file is absent, or nothing accepts on it (QEMU exited)."""


class _Busy(Exception):
    """The socket accepts but QEMU does not greet: another client holds the monitor, or QEMU hangs."""


class _Broken(Exception):
    """The connection died during a command; the command may be repeated on a new connection."""


@dataclass(frozen=True, slots=True)
class BalloonChangeEvent:
    """QEMU's BALLOON_CHANGE: the guest moved its balloon to ``actual_bytes`` at ``time`` (monotonic s)."""

    actual_bytes: int
    time: float


@dataclass(frozen=True, slots=True)
class _VirtioMemFacts:
    path: str
    memaddr: int
    block_bytes: int
    region_bytes: int


@dataclass(frozen=True, slots=True)
class _Facts:
    """What one QEMU process cannot change while it runs: read once per process."""

    name: str | None  # -name, or None
    balloon_path: str | None
    autodeflate: bool
    free_page_reporting: bool
    boot_bytes: int
    virtio_mem: _VirtioMemFacts | None
    max_vcpus: int | None
    incapable: str | None  # why an inflated balloon frees nothing at the host (VFIO), or None


class _Monitor:
    """One QMP socket: its connection (if open), the QEMU behind it and what is known about that QEMU."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stem = path.name.removesuffix(path.suffix) if path.suffix else path.name
        self.client: QMPClient | None = None
        self.events: asyncio.Task[None] | None = None
        self.identity: tuple[int, int, int | None] | None = None  # socket (dev, inode), QEMU PID
        self.pid: int | None = None
        self.facts: _Facts | None = None
        self.target: int | None = None  # the balloon target this backend set for this QEMU
        self.shutdown = False
        self.last_balloon: BalloonChangeEvent | None = None
        self.last_seen: GuestSnapshot | None = None  # as the last snapshot reported it

    def forget(self) -> None:
        """A different QEMU (or none) is behind the socket now: nothing known about the old one holds."""
        self.facts = None
        self.target = None
        self.shutdown = False
        self.last_balloon = None
        self.last_seen = None

    def socket_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None


class Monitors:
    """The monitors a URI covers, and each one's connection from connect to hang-up.

    Every method runs on the backend's event loop (:mod:`autoballoon.backends.qmp.bridge`).
    """

    def __init__(self, location: Location) -> None:
        self.location = location
        self._monitors: dict[Path, _Monitor] = {}

    # -- which sockets -------------------------------------------------------------------------------

    def _monitor(self, path: Path) -> _Monitor:
        mon = self._monitors.get(path)
        if mon is None:
            mon = self._monitors[path] = _Monitor(path)
        return mon

    async def _discover(self) -> list[_Monitor]:
        """The sockets the URI covers now; monitors of sockets that went away are closed and dropped."""
        loc = self.location
        if loc.mode is Mode.SOCKET:
            return [self._monitor(loc.path)]
        paths = sorted(p for p in loc.path.glob(loc.glob) if _is_socket(p))
        for path in set(self._monitors) - set(paths):
            await self._disconnect(self._monitors.pop(path))
        return [self._monitor(p) for p in paths]

    async def _close_all(self) -> None:
        await asyncio.gather(*(self._disconnect(m) for m in self._monitors.values()))

    # -- connections ---------------------------------------------------------------------------------

    async def _connect(self, mon: _Monitor) -> QMPClient:
        """The monitor's open connection, or a new one; _Gone, _Busy if there is none to be had."""
        if mon.client is not None:
            if mon.client.runstate == Runstate.RUNNING:
                return mon.client
            await self._disconnect(mon)
        ident = mon.socket_identity()
        if ident is None:
            mon.forget()
            raise _Gone(f"no socket at {mon.path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, str(mon.path)), CONNECT_TIMEOUT_S
            )
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            sock.close()
            mon.forget()
            raise _Gone(f"nothing accepts on {mon.path} ({exc.strerror}): QEMU is not running") from None
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise _Busy(f"cannot connect to {mon.path}: {exc}") from None
        pid = hostinfo.peer_pid(sock) or hostinfo.read_pidfile(mon.path.with_name(mon.stem + PID_SUFFIX))
        client = QMPClient(mon.stem)
        try:
            await asyncio.wait_for(client.connect(sock), CONNECT_TIMEOUT_S)
        except (TimeoutError, QMPError, OSError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            sock.close()
            if isinstance(exc, TimeoutError):
                raise _Busy(
                    f"QEMU did not greet on {mon.path} within {CONNECT_TIMEOUT_S:g} s: another client "
                    "may hold this monitor (a QMP socket serves one client at a time)"
                ) from None
            raise _Busy(f"QMP handshake on {mon.path} failed: {exc}") from None
        identity = (*ident, pid)
        if identity != mon.identity:
            mon.forget()
            mon.identity = identity
        mon.pid = pid
        listener = EventListener(EVENTS)
        client.register_listener(listener)
        mon.client = client
        mon.events = asyncio.create_task(self._watch(mon, listener))
        return client

    async def _disconnect(self, mon: _Monitor) -> None:
        client, mon.client = mon.client, None
        task, mon.events = mon.events, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if client is not None:
            with contextlib.suppress(Exception):  # a hung-up connection fails its disconnect in any way
                await client.disconnect()

    async def _watch(self, mon: _Monitor, listener: EventListener) -> None:
        """Record QEMU's events as they come (the backend acts on them at its next call)."""
        async for event in listener:
            name = event.get("event")
            data = event.get("data")
            if name == "BALLOON_CHANGE" and isinstance(data, Mapping):
                actual = wire.number(data.get("actual"))
                if actual is not None:
                    mon.last_balloon = BalloonChangeEvent(actual, time.monotonic())
            elif name == "SHUTDOWN":
                # The guest is going down; if it comes back it boots at its full size, not our target.
                mon.shutdown = True
                mon.target = None
            elif name == "RESUME":  # running again (``-no-shutdown``, then ``system_reset`` and ``cont``)
                mon.shutdown = False

    async def _exec(self, client: QMPClient, cmd: str, args: Mapping[str, object] | None = None) -> Any:
        """One command; ExecuteError passes (QEMU answered no), a dead connection becomes _Broken."""
        try:
            return await asyncio.wait_for(client.execute(cmd, args), COMMAND_TIMEOUT_S)
        except ExecuteError:
            raise
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            raise _Broken(f"{cmd}: {str(exc) or type(exc).__name__}") from None

    async def _on(self, mon: _Monitor, fn: Callable[[QMPClient], Awaitable[T]]) -> T:
        """Run ``fn`` on the monitor's connection; once more on a new connection if that one died under it.

        Every operation here reads, or sets absolute values, so repeating one is safe.
        """
        for attempt in (1, 2):
            client = await self._connect(mon)
            try:
                return await fn(client)
            except _Broken:
                await self._disconnect(mon)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- what a QEMU process is ---------------------------------------------------------------------

    async def _facts(self, client: QMPClient) -> _Facts:
        """Name, balloon device, boot memory and virtio-mem device of the QEMU behind ``client``."""
        name, summary, *lists = await asyncio.gather(
            self._exec(client, "query-name"),
            self._exec(client, "query-memory-size-summary"),
            *(self._exec(client, "qom-list", {"path": c}) for c in wire.PERIPHERAL_CONTAINERS),
        )
        balloons: list[str] = []
        mems: list[str] = []
        vfio: list[str] = []
        for container, entries in zip(wire.PERIPHERAL_CONTAINERS, lists, strict=True):
            balloons += wire.child_paths(container, entries, wire.BALLOON_TYPES)
            mems += wire.child_paths(container, entries, wire.VIRTIO_MEM_TYPES)
            vfio += wire.passthrough_devices(entries)
        balloon = balloons[0] if balloons else None
        autodeflate = fpr = False
        if balloon is not None:
            autodeflate, fpr = await asyncio.gather(
                self._exec(client, "qom-get", {"path": balloon, "property": "deflate-on-oom"}),
                self._exec(client, "qom-get", {"path": balloon, "property": "free-page-reporting"}),
            )
        try:
            cpus = await self._exec(client, "query-hotpluggable-cpus")
            max_vcpus = len(cpus) if isinstance(cpus, list) and cpus else None
        except ExecuteError:  # machines without CPU hotplug
            max_vcpus = None
        boot = wire.number(summary.get("base-memory")) if isinstance(summary, Mapping) else None
        return _Facts(
            name=name.get("name") if isinstance(name, Mapping) and name.get("name") else None,
            balloon_path=balloon,
            autodeflate=autodeflate is True,
            free_page_reporting=fpr is True,
            boot_bytes=boot or 0,
            virtio_mem=await self._virtio_mem_facts(client, mems),
            max_vcpus=max_vcpus,
            incapable=(
                f"balloon ineffective: a VFIO host device ({', '.join(vfio)}) pins all guest memory"
                if vfio
                else None
            ),
        )

    async def _virtio_mem_facts(self, client: QMPClient, paths: list[str]) -> _VirtioMemFacts | None:
        """The guest's virtio-mem device: its QOM path, block size and region. One device per guest is
        managed (the first); more are left as they are, with a warning."""
        if not paths:
            return None
        if len(paths) > 1:
            log.warning("%d virtio-mem devices; only %s is resized", len(paths), paths[0])
        addr = wire.number(await self._exec(client, "qom-get", {"path": paths[0], "property": "memaddr"}))
        data = wire.virtio_mem_devices(await self._exec(client, "query-memory-devices")).get(addr or -1)
        if addr is None or data is None:
            return None
        block, region = wire.number(data.get("block-size")), wire.number(data.get("max-size"))
        if not block or region is None:
            return None
        return _VirtioMemFacts(paths[0], addr, block, region)

    async def _known(self, mon: _Monitor) -> tuple[QMPClient, _Facts]:
        client = await self._connect(mon)
        if mon.facts is None:
            mon.facts = await self._facts(client)
        return client, mon.facts

    async def _learn(self, mon: _Monitor) -> None:
        """Read a QEMU's facts if it can be reached now; one that cannot is simply not found by name."""
        with contextlib.suppress(_Gone, _Busy, _Broken, ExecuteError):
            await self._on(mon, lambda _client: self._known(mon))


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
