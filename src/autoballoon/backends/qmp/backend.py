"""The QMP backend: plain QEMU and Proxmox VE, through QEMU's own monitor sockets (no libvirt).

The Backend protocol is synchronous and qemu.qmp is asyncio, so each backend runs one event loop in a
thread of its own and every call is a coroutine handed to it: calls from the controller's and the HTTP
server's threads are serialised there, and with ``?hold=on`` QEMU's events are read as they arrive.

A QMP socket serves one client at a time, so by default the backend connects for each call and hangs up
when it is done (a few milliseconds per VM): Proxmox's own tools, an operator's script and other
``autoballoon`` commands keep working beside the daemon. The facts that never change while one QEMU
process runs (its name, its balloon's QOM path, the balloon's switches, its boot memory, its virtio-mem
device) are kept between connections, for as long as the socket file and the QEMU behind it (its PID,
from the socket's peer credentials) stay the same; a new QEMU on the same path is a new VM, which boots
at its full size, so the target the backend remembered for the old one is dropped.

QEMU does not report the balloon's target, only where the balloon is (``actual``), so the backend
remembers the targets it set, as the libvirt backend does; a target set by another client shows up as
the ``actual`` the guest reaches. Every failure leaves as an :mod:`autoballoon.errors` exception naming
the VM and carrying QEMU's message: a socket that is gone is a lost connection for a one-socket URI
(the daemon retries with back-off until it comes back) and a VM that stopped for a directory of sockets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate

from autoballoon import hostinfo
from autoballoon.backends import proxmox
from autoballoon.backends.qmp import wire
from autoballoon.backends.qmp.uri import Location, Mode, parse_uri
from autoballoon.errors import (
    BackendError,
    ConnectionLostError,
    InvalidValueError,
    LimitError,
    RefusedError,
    UnknownVMError,
)
from autoballoon.model import (
    BalloonChange,
    BalloonConfig,
    ChangeResult,
    GuestPolicy,
    GuestSnapshot,
    GuestStats,
    HostSnapshot,
    VirtioMem,
    VMState,
)
from autoballoon.text import printable
from autoballoon.units import human

log = logging.getLogger(__name__)
# qemu.qmp logs every failed connection and every hang-up at ERROR; the backend turns each into one of
# the project's exceptions (or a VM that stopped), so the library's own lines are noise in the journal.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
T = TypeVar("T")

#: Connect, read QEMU's greeting and negotiate capabilities: QEMU answers in milliseconds even under TCG
#: load, so a socket that stays silent this long is held by another client.
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 10.0
#: A whole backend call (a snapshot of every VM runs its VMs' connections side by side).
CALL_TIMEOUT_S = 30.0
EVENTS = ("BALLOON_CHANGE", "SHUTDOWN", "RESUME")
PID_SUFFIX = ".pid"
NO_BALLOON = "DeviceNotActive"


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


@dataclass(frozen=True, slots=True)
class _Reading:
    """One VM's dynamic state from one connection."""

    state: VMState
    actual: int | None  # balloon actual (boot memory only)
    stats: Any
    stats_period: int | None
    virtio_mem: VirtioMem | None
    vcpu_threads: list[int]
    hold: str | None
    dimm_bytes: int  # memory in hot-plugged DIMMs (see :func:`wire.dimm_bytes`)


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


def _dimms_incapable(dimm_bytes: int) -> str | None:
    """Why a VM with memory in hot-plugged DIMMs is left alone: this backend sizes a balloon on the boot
    memory (``-m``), while QEMU sizes it on the boot memory and the DIMMs together, so a target would
    land off by the DIMMs, possibly far below what the guest uses."""
    if not dimm_bytes:
        return None
    return (
        f"memory in hot-plugged DIMMs ({human(dimm_bytes)}), which this backend does not size a balloon "
        "across; left alone (manage it through libvirt, or without memory hotplug)"
    )


class QmpBackend:
    """A :class:`~autoballoon.backends.base.Backend` over QEMU's QMP sockets."""

    def __init__(self, uri: str, location: Location) -> None:
        self.uri = uri
        self.location = location
        self._lock = threading.RLock()
        self._monitors: dict[Path, _Monitor] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qmp-backend", daemon=True)
        self._thread.start()
        self._closed = False

    # -- opening and the event-loop thread -----------------------------------------------------------

    @classmethod
    def open(cls, uri: str) -> QmpBackend:
        """Parse the URI and check that its socket or directory is there; BackendError if it is not."""
        from urllib.parse import unquote, urlsplit

        raw = unquote(urlsplit(uri).path)
        location = parse_uri(uri, is_dir=bool(raw) and Path(raw).is_dir())
        if location.mode is not Mode.SOCKET and not location.path.is_dir():
            raise BackendError(f"cannot open {uri}", cause=f"no directory {location.path}")
        if location.mode is Mode.PROXMOX and not (location.conf_dir and location.conf_dir.is_dir()):
            raise BackendError(
                f"cannot open {uri}",
                cause=f"no Proxmox VM configs in {location.conf_dir}; for a directory of plain QEMU "
                "sockets add ?glob=*.qmp, for configs elsewhere ?conf=DIR",
            )
        backend = cls(uri, location)
        if location.mode is Mode.SOCKET:
            try:
                backend.snapshot()
            except BackendError as exc:
                backend.close()
                raise BackendError(f"cannot connect to {uri}", cause=exc.cause or str(exc)) from None
            except BaseException:
                backend.close()  # its loop thread with it
                raise
        return backend

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine on the backend's loop and wait for it (one call at a time)."""
        with self._lock:  # ``close`` takes it too: the loop is not closed under a call
            if self._closed:
                coro.close()
                raise BackendError(f"the connection to {self.uri} is closed")
            ended = threading.Event()
            future = asyncio.run_coroutine_threadsafe(self._session(coro, ended), self._loop)
            try:
                return future.result(CALL_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                # Cancelled, the session still closes its connections: the next call must not start
                # before that is done, or those it opens would be closed under it.
                future.cancel()
                ended.wait(CONNECT_TIMEOUT_S)
                raise BackendError(f"QMP call on {self.uri} took longer than {CALL_TIMEOUT_S:g} s") from None

    async def _session(self, coro: Awaitable[T], ended: threading.Event) -> T:
        """One call; without ``hold`` every connection it opened is closed again when it is done, and
        then ``ended`` is set (a call cancelled on its timeout is waited for up to that point)."""
        try:
            return await coro
        finally:
            try:
                if not self.location.hold:
                    await asyncio.gather(*(self._disconnect(m) for m in self._monitors.values()))
            finally:
                ended.set()

    def close(self) -> None:
        """Close every connection and stop the loop thread. Never changes a VM."""
        if self._closed:
            return
        with self._lock:
            future = asyncio.run_coroutine_threadsafe(self._close_all(), self._loop)
            with contextlib.suppress(Exception):
                future.result(CALL_TIMEOUT_S)
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

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
            await asyncio.wait_for(self._loop.sock_connect(sock, str(mon.path)), CONNECT_TIMEOUT_S)
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

    async def _read(self, mon: _Monitor) -> tuple[_Facts, _Reading]:
        async def read(_client: QMPClient) -> tuple[_Facts, _Reading]:
            client, facts = await self._known(mon)
            status, cpus, migration, devices = await asyncio.gather(
                self._exec(client, "query-status"),
                self._exec(client, "query-cpus-fast"),
                self._exec(client, "query-migrate"),
                self._exec(client, "query-memory-devices"),
            )
            actual: int | None = None
            stats: Any = None
            period: int | None = None
            if facts.balloon_path is not None:
                try:
                    reply = await self._exec(client, "query-balloon")
                    actual = wire.number(reply.get("actual")) if isinstance(reply, Mapping) else None
                except ExecuteError as exc:
                    if exc.error_class != NO_BALLOON:
                        raise
                path = facts.balloon_path
                stats, raw_period = await asyncio.gather(
                    self._exec(client, "qom-get", {"path": path, "property": "guest-stats"}),
                    self._exec(client, "qom-get", {"path": path, "property": "guest-stats-polling-interval"}),
                )
                period = wire.number(raw_period)
            vmem = None
            if facts.virtio_mem is not None:
                data = wire.virtio_mem_devices(devices).get(facts.virtio_mem.memaddr)
                vmem = wire.virtio_mem(data, facts.boot_bytes) if data is not None else None
            state = wire.vm_state(status)
            if mon.shutdown and state is VMState.RUNNING:
                state = VMState.SHUTDOWN
            hold = wire.hold_reason(status, migration)
            dimms = wire.dimm_bytes(devices)
            return facts, _Reading(state, actual, stats, period, vmem, wire.vcpu_threads(cpus), hold, dimms)

        return await self._on(mon, read)

    # -- VMs: which sockets, which names ------------------------------------------------------------

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

    def _configs(self) -> dict[str, proxmox.PveConfig]:
        conf_dir = self.location.conf_dir
        return proxmox.read_configs(conf_dir) if conf_dir is not None else {}

    def _names(self, mons: list[_Monitor], configs: Mapping[str, proxmox.PveConfig]) -> dict[str, _Monitor]:
        """Each reachable VM's name. Proxmox names come from the configs; others from QEMU's ``-name``
        (the socket's file name when it has none, or when two QEMUs share one)."""
        pve = proxmox.vm_names(dict(configs)) if configs else {}
        named: dict[str, list[_Monitor]] = {}
        for mon in mons:
            name = pve.get(mon.stem) or (mon.facts.name if mon.facts and mon.facts.name else mon.stem)
            named.setdefault(name, []).append(mon)
        out = {name: group[0] for name, group in named.items() if len(group) == 1}
        for group in (g for g in named.values() if len(g) > 1):
            for mon in group:  # a file name another VM goes by already: the whole path, which is unique
                out[mon.stem if mon.stem not in out else str(mon.path)] = mon
        return out

    async def _learn(self, mon: _Monitor) -> None:
        """Read a QEMU's facts if it can be reached now; one that cannot is simply not found by name."""
        with contextlib.suppress(_Gone, _Busy, _Broken, ExecuteError):
            await self._on(mon, lambda _client: self._known(mon))

    async def _resolve(self, vm: str) -> tuple[str, _Monitor | None, proxmox.PveConfig | None]:
        """The VM called ``vm`` (its name, or a Proxmox VM id): its monitor (None: a Proxmox VM that is
        not running) and its Proxmox config. UnknownVMError if there is none."""
        mons = await self._discover()
        configs = self._configs()
        stale = [
            m for m in mons if m.facts is None or m.identity is None or m.identity[:2] != m.socket_identity()
        ]
        # A QEMU whose name is not known yet (or that restarted) must say it; side by side.
        await asyncio.gather(*(self._learn(m) for m in stale))
        names = self._names(mons, configs)
        if vm in names:
            mon = names[vm]
            return vm, mon, configs.get(mon.stem)
        by_stem = {m.stem: (n, m) for n, m in names.items()}
        if vm in by_stem:
            name, mon = by_stem[vm]
            return name, mon, configs.get(mon.stem)
        pve = proxmox.vm_names(configs)
        for vmid, name in pve.items():
            if vm in (name, vmid):
                return name, None, configs[vmid]
        raise UnknownVMError(vm, sorted({*names, *pve.values()}))

    # -- snapshots ------------------------------------------------------------------------------------

    def _guest(
        self, name: str, mon: _Monitor, facts: _Facts, r: _Reading, conf: proxmox.PveConfig | None
    ) -> GuestSnapshot:
        vmem = r.virtio_mem
        plugged = vmem.plugged_bytes if vmem is not None else 0
        has_balloon = facts.balloon_path is not None
        balloon_actual = r.actual if has_balloon else facts.boot_bytes
        balloon_target = mon.target if mon.target is not None else (balloon_actual or facts.boot_bytes)
        requested = vmem.requested_bytes if vmem is not None else 0
        region = vmem.region_bytes if vmem is not None else 0
        active = r.state.active
        pid = mon.pid
        return GuestSnapshot(
            name=name,
            state=r.state,
            max_bytes=facts.boot_bytes + region,
            target_bytes=balloon_target + requested,
            actual_bytes=balloon_actual + plugged if active and balloon_actual is not None else None,
            stats=wire.guest_stats(r.stats),
            balloon=BalloonConfig(
                model="virtio" if has_balloon else "none",
                autodeflate=facts.autodeflate,
                free_page_reporting=facts.free_page_reporting,
                stats_period=r.stats_period if has_balloon else None,
            ),
            policy=conf.policy if conf is not None else GuestPolicy(),
            vcpus=len(r.vcpu_threads) or 1,
            max_vcpus=facts.max_vcpus or len(r.vcpu_threads) or 1,
            cpu_time_ns=hostinfo.threads_cpu_ns(pid, r.vcpu_threads) if pid and r.vcpu_threads else None,
            os_type=conf.os_type if conf is not None else "unknown",
            persistent=conf is not None,
            uuid=conf.uuid if conf is not None else None,
            virtio_mem=vmem,
            host_rss_bytes=hostinfo.process_rss(pid) if pid else None,
            hold=r.hold,
            incapable=facts.incapable or _dimms_incapable(r.dimm_bytes),
        )

    @staticmethod
    def _stopped(name: str, conf: proxmox.PveConfig, state: VMState = VMState.SHUTOFF) -> GuestSnapshot:
        """A Proxmox VM that is not running (or cannot be read now), as its config describes it."""
        return GuestSnapshot(
            name=name,
            state=state,
            max_bytes=conf.memory_bytes,
            target_bytes=conf.memory_bytes,
            actual_bytes=None,
            balloon=BalloonConfig(model="none" if conf.balloon_off else "virtio"),
            policy=conf.policy,
            os_type=conf.os_type,
            persistent=True,
            uuid=conf.uuid,
        )

    async def _read_or_why(self, mon: _Monitor) -> tuple[_Facts, _Reading] | Exception:
        try:
            return await self._read(mon)
        except (_Gone, _Busy, _Broken, ExecuteError) as exc:
            return exc

    async def _snapshot(self) -> tuple[GuestSnapshot, ...]:
        mons = await self._discover()
        readings = await asyncio.gather(*(self._read_or_why(m) for m in mons))
        configs = self._configs()
        live = [m for m, r in zip(mons, readings, strict=True) if not isinstance(r, _Gone)]
        names = {id(m): n for n, m in self._names(live, configs).items()}
        pve = proxmox.vm_names(configs)
        guests: list[GuestSnapshot] = []
        seen: set[str] = set()
        for mon, reading in zip(mons, readings, strict=True):
            if isinstance(reading, _Gone):
                if self.location.mode is Mode.SOCKET:
                    raise ConnectionLostError(f"lost the QMP socket of {self.uri}", cause=str(reading))
                continue
            name = names[id(mon)]
            conf = configs.get(mon.stem)
            if isinstance(reading, Exception):
                if self.location.mode is Mode.SOCKET:
                    raise self._convert(reading, name, "read the VM's state")
                log.warning("VM %s: cannot read it now: %s", printable(name), printable(str(reading)))
                if mon.last_seen is not None and mon.last_seen.name == name:
                    # As last seen, held: the policy keeps what it knows of it (a target reported
                    # differently now would read as someone else's change, a VM left out is forgotten).
                    why = f"cannot read it now ({reading})"
                    guests.append(replace(mon.last_seen, state=VMState.UNKNOWN, stats=GuestStats(), hold=why))
                    seen.add(mon.stem)
                elif conf is not None:
                    guests.append(self._stopped(name, conf, VMState.UNKNOWN))
                    seen.add(mon.stem)
                continue
            facts, r = reading
            mon.last_seen = self._guest(name, mon, facts, r, conf)
            guests.append(mon.last_seen)
            seen.add(mon.stem)
        for vmid, conf in configs.items():
            if vmid not in seen and self.location.mode is Mode.PROXMOX:
                guests.append(self._stopped(pve[vmid], conf))
        return tuple(sorted(guests, key=lambda g: g.name))

    def snapshot(self) -> HostSnapshot:
        guests = self._run(self._snapshot())
        return hostinfo.local_host_snapshot(guests, time.monotonic(), time.time())

    async def _one(self, vm: str) -> GuestSnapshot:
        name, mon, conf = await self._resolve(vm)
        if mon is None:
            assert conf is not None
            return self._stopped(name, conf)
        try:
            facts, reading = await self._read(mon)
        except _Gone:
            if conf is not None:
                return self._stopped(name, conf)
            raise self._gone(name, mon) from None
        except (_Busy, _Broken, ExecuteError) as exc:
            raise self._convert(exc, name, "read the VM's state") from None
        return self._guest(name, mon, facts, reading, conf)

    def guest(self, vm: str) -> GuestSnapshot:
        return self._run(self._one(vm))

    def last_balloon_change(self, vm: str) -> BalloonChangeEvent | None:
        """The last BALLOON_CHANGE QEMU sent for ``vm`` while a connection was open (with ``?hold=on``:
        every one since the backend opened)."""
        with self._lock:
            for mon in self._monitors.values():
                if vm in (mon.stem, mon.facts.name if mon.facts else None):
                    return mon.last_balloon
        return None

    # -- errors ---------------------------------------------------------------------------------------

    def _gone(self, vm: str, mon: _Monitor) -> BackendError | UnknownVMError:
        """A VM whose QEMU went away during a call: a lost connection for a one-socket URI (the daemon
        reconnects), an unknown VM for a directory (the daemon journals it as gone)."""
        if self.location.mode is Mode.SOCKET:
            return ConnectionLostError(f"lost the QMP socket of {self.uri}", vm=vm, cause=f"{mon.path}")
        return UnknownVMError(vm)

    def _convert(self, exc: Exception, vm: str, what: str) -> BackendError:
        if isinstance(exc, ExecuteError):
            return BackendError(f"QEMU refused to {what}", vm=vm, cause=f"{exc.error_class}: {exc}")
        if isinstance(exc, _Broken) and self.location.mode is Mode.SOCKET:
            return ConnectionLostError(f"connection to {self.uri} lost during {what}", vm=vm, cause=str(exc))
        return BackendError(f"could not {what}", vm=vm, cause=str(exc))

    async def _running(self, vm: str) -> tuple[str, _Monitor, _Facts, proxmox.PveConfig | None]:
        """A VM that must be running for a live change: its name, monitor and facts; refused otherwise."""
        name, mon, conf = await self._resolve(vm)
        if mon is None:
            raise RefusedError(f"refused: VM {name!r} is not running, so nothing can change live")
        try:
            _, facts = await self._on(mon, lambda c: self._known(mon))
        except _Gone:
            if conf is not None:
                raise RefusedError(
                    f"refused: VM {name!r} is not running, so nothing can change live"
                ) from None
            raise self._gone(name, mon) from None
        except (_Busy, _Broken, ExecuteError) as exc:
            raise self._convert(exc, name, "reach QEMU") from None
        return name, mon, facts, conf

    # -- changes --------------------------------------------------------------------------------------

    def set_target(self, vm: str, target_bytes: int, *, live: bool = True, config: bool = False) -> None:
        if target_bytes <= 0:
            raise InvalidValueError(f"balloon target for VM {vm!r}", target_bytes, "a size above 0")
        if not live and not config:
            raise InvalidValueError(f"change for VM {vm!r}", "neither live nor config", "--live")
        if config:
            raise RefusedError(
                f"refused: VM {vm!r} is run by QEMU directly, which keeps no persistent config to change "
                "(its size at boot is on its command line: -m, or Proxmox's 'memory' and 'balloon'); "
                "drop --config"
            )
        self._run(self._set_target(vm, target_bytes))

    async def _set_target(self, vm: str, target: int) -> None:
        name, mon, facts, _ = await self._running(vm)
        vmem = facts.virtio_mem
        top = facts.boot_bytes + (vmem.region_bytes if vmem else 0)
        if target > top:
            raise LimitError(name, "balloon target", human(target), f"above its maximum of {human(top)}")
        if facts.balloon_path is None and vmem is None:
            raise RefusedError(
                f"refused: VM {name!r} has neither a balloon nor a virtio-mem device to resize"
            )
        if facts.balloon_path is None and target < facts.boot_bytes:
            raise LimitError(
                name,
                "target",
                human(target),
                f"below its boot memory of {human(facts.boot_bytes)}, which it has no balloon to shrink",
            )

        async def apply(client: QMPClient) -> None:
            why = _dimms_incapable(wire.dimm_bytes(await self._exec(client, "query-memory-devices")))
            if why is not None:
                raise RefusedError(f"refused: VM {name!r}: {why}; nothing was changed")
            balloon = wire.balloon_value(facts.boot_bytes, min(target, facts.boot_bytes))
            if vmem is not None:
                device = VirtioMem(vmem.block_bytes, 0, 0, vmem.region_bytes, facts.boot_bytes)
                requested = device.requested_for(target)
                await self._exec(
                    client,
                    "qom-set",
                    {"path": vmem.path, "property": "requested-size", "value": requested},
                )
            if facts.balloon_path is not None:
                await self._exec(client, "balloon", {"value": balloon})
                mon.target = balloon

        try:
            await self._on(mon, apply)
        except _Gone:
            raise self._gone(name, mon) from None
        except (_Busy, _Broken, ExecuteError) as exc:
            raise self._convert(exc, name, "set the balloon target") from None

    def set_max(self, vm: str, max_bytes: int) -> ChangeResult:
        if max_bytes <= 0:
            raise InvalidValueError(f"maximum memory for VM {vm!r}", max_bytes, "a size above 0")
        self.guest(vm)  # an unknown VM is an unknown VM before it is anything else
        raise RefusedError(
            f"refused: VM {vm!r} is run by QEMU directly: its maximum is fixed on its command line (-m); "
            "on Proxmox VE change it with 'qm set VMID --memory MiB'; nothing was changed"
        )

    def set_vcpus(self, vm: str, count: int, *, live: bool = True, config: bool = False) -> ChangeResult:
        self.guest(vm)
        raise RefusedError(
            f"refused: the QMP backend does not change vCPUs of VM {vm!r} (plain QEMU hot-plugs them with "
            "device_add; on Proxmox VE use 'qm set VMID --vcpus N'); nothing was changed"
        )

    def set_balloon(self, vm: str, change: BalloonChange) -> ChangeResult:
        if change.empty:
            raise InvalidValueError(
                f"balloon change for VM {vm!r}",
                "nothing",
                "at least one of model, autodeflate, free page reporting, stats period",
            )
        fixed = [
            what
            for what, value in (
                ("model", change.model),
                ("autodeflate", change.autodeflate),
                ("free page reporting", change.free_page_reporting),
            )
            if value is not None
        ]
        if fixed:
            self.guest(vm)
            raise RefusedError(
                f"refused: VM {vm!r} is run by QEMU directly, so its balloon's {', '.join(fixed)} are fixed "
                "on its command line (-device virtio-balloon-pci,deflate-on-oom=on,free-page-reporting=on; "
                "on Proxmox VE 'balloon: 0' removes the device); only --stats-period changes live; "
                "nothing was changed"
            )
        period = change.stats_period
        if period is None or period < 0:
            raise InvalidValueError(f"stats period for VM {vm!r}", period, "whole seconds, 0 (off) or more")
        return self._run(self._set_stats_period(vm, period))

    async def _set_stats_period(self, vm: str, period: int) -> ChangeResult:
        name, mon, facts, _ = await self._running(vm)
        path = facts.balloon_path
        if path is None:
            raise RefusedError(f"refused: VM {name!r} runs without a balloon device; no live stats period")

        async def apply(client: QMPClient) -> None:
            await self._exec(
                client, "qom-set", {"path": path, "property": "guest-stats-polling-interval", "value": period}
            )

        try:
            await self._on(mon, apply)
        except (_Gone, _Busy, _Broken, ExecuteError) as exc:
            raise self._convert(exc, name, "set the stats period") from None
        return ChangeResult(
            live=True, next_boot=False, message=f"{name}: live stats period {period} s (until QEMU exits)"
        )

    def get_policy(self, vm: str) -> GuestPolicy:
        return self.guest(vm).policy

    def set_policy(self, vm: str, policy: GuestPolicy) -> None:
        self.guest(vm)
        raise RefusedError(
            f"refused: a VM run by QEMU directly has no metadata to store a policy in; set it for {vm!r} in "
            f'the config file ([vm."{vm}"] min, max, shares, buffer, exclude) or through the running '
            "daemon's API; nothing was changed"
        )


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
