"""The QMP backend: plain QEMU and Proxmox VE, through QEMU's own monitor sockets (no libvirt).

Three parts, one file each: :mod:`~autoballoon.backends.qmp.bridge` runs the asyncio calls for the
synchronous Backend protocol, :mod:`~autoballoon.backends.qmp.monitor` keeps each socket's connection and
what is known of the QEMU behind it, and this module reads VMs and changes them.

QEMU does not report the balloon's target, only where the balloon is (``actual``), so the backend
remembers the targets it set, as the libvirt backend does; a target set by another client shows up as
the ``actual`` the guest reaches. Every failure leaves as an :mod:`autoballoon.errors` exception naming
the VM and carrying QEMU's message: a socket that is gone is a lost connection for a one-socket URI
(the daemon retries with back-off until it comes back) and a VM that stopped for a directory of sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient

from autoballoon import hostinfo
from autoballoon.backends import proxmox
from autoballoon.backends.qmp import wire
from autoballoon.backends.qmp.bridge import LoopBridge
from autoballoon.backends.qmp.monitor import (
    CONNECT_TIMEOUT_S,
    BalloonChangeEvent,
    Monitors,
    _Broken,
    _Busy,
    _Facts,
    _Gone,
    _Monitor,
)
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

NO_BALLOON = "DeviceNotActive"


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
    disk_read_bytes: int | None  # see :func:`wire.disk_read_bytes`


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


class QmpBackend(Monitors):
    """A :class:`~autoballoon.backends.base.Backend` over QEMU's QMP sockets: the reads and writes, on
    the monitors it inherits, through its loop bridge."""

    def __init__(self, uri: str, location: Location) -> None:
        super().__init__(location)
        self.uri = uri
        self._bridge = LoopBridge(uri, CONNECT_TIMEOUT_S)

    # -- opening and closing -------------------------------------------------------------------------

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
        return self._bridge.run(coro, self._hang_up)

    async def _hang_up(self) -> None:
        """After a call: without ``hold`` every connection it opened is closed again."""
        if not self.location.hold:
            await self._close_all()

    def close(self) -> None:
        """Close every connection and stop the loop thread. Never changes a VM."""
        self._bridge.close(self._close_all)

    # -- reads ---------------------------------------------------------------------------------------

    async def _read(self, mon: _Monitor) -> tuple[_Facts, _Reading]:
        async def read(_client: QMPClient) -> tuple[_Facts, _Reading]:
            client, facts = await self._known(mon)
            status, cpus, migration, devices, blocks = await asyncio.gather(
                self._exec(client, "query-status"),
                self._exec(client, "query-cpus-fast"),
                self._exec(client, "query-migrate"),
                self._exec(client, "query-memory-devices"),
                self._exec(client, "query-blockstats"),
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
            reads = wire.disk_read_bytes(blocks)
            return facts, _Reading(
                state, actual, stats, period, vmem, wire.vcpu_threads(cpus), hold, dimms, reads
            )

        return await self._on(mon, read)

    # -- VMs: which names ---------------------------------------------------------------------------

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
            disk_read_bytes=r.disk_read_bytes if active else None,
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
        with self._bridge.lock:
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
        assert period is not None  # not empty, and every other field was refused above
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
