"""The libvirt backend: any libvirt URI (qemu:///system, qemu+ssh://..., test:///default).

One bulk ``getAllDomainStats`` per snapshot; domain XML (limits, balloon config, OS, policy) is parsed
once per domain and kept until an event says it changed. libvirt's live ``<currentMemory>`` follows
the balloon's *actual* size (every BALLOON_CHANGE overwrites it), so libvirt forgets the target a
balloon is moving towards: the backend remembers the targets it set itself. Every libvirt error leaves
as an :mod:`autoballoon.errors` exception naming the VM and carrying libvirt's message; a dropped
connection is re-opened with back-off at the next call, and domains are always looked up again by name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from autoballoon import hostinfo
from autoballoon.backends.libvirt import stats as lvstats
from autoballoon.backends.libvirt import xml as lvxml
from autoballoon.backends.libvirt.events import BalloonChangeEvent, DomainEvents, ensure_event_loop
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
    ChangeResult,
    GuestPolicy,
    GuestSnapshot,
    HostSnapshot,
    VirtioMem,
    VMState,
    check_policy,
)
from autoballoon.units import KiB, MiB, human

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Where the system libvirtd's QEMU driver writes each running domain's QEMU PID.
QEMU_PID_DIR = Path("/run/libvirt/qemu")
#: Drivers whose host is this machine when the URI names no remote host.
LOCAL_DRIVERS = ("qemu", "kvm")
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class LibvirtTunables:
    """Timing of keepalive and the XML cache.

    There is no reconnect back-off here: a lost connection is tried again once per call, and the
    caller waits between calls (the daemon's loop backs off on a wait that SIGTERM interrupts). Sleeping
    in here held the backend's lock for up to 8 s and made a stopping daemon wait for it.
    """

    keepalive_interval_s: int = 5
    keepalive_count: int = 3
    #: Re-read a domain's XML at least this often even without events (changes made elsewhere).
    xml_max_age_s: float = 30.0


@dataclass(frozen=True, slots=True)
class _CachedDomain:
    config: lvxml.DomainConfig
    persistent: bool
    fetched: float


def _message(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised as exceptions instead."""


class LibvirtBackend:
    """A :class:`~autoballoon.backends.base.Backend` over libvirt-python."""

    def __init__(self, uri: str, tunables: LibvirtTunables | None = None) -> None:
        self.uri = uri
        self.tunables = tunables or LibvirtTunables()
        parts = urlsplit(uri)
        driver, _, transport = parts.scheme.partition("+")
        self.local = driver in LOCAL_DRIVERS and parts.hostname in (None, *LOCAL_HOSTS) and transport != "ssh"
        self._conn: libvirt.virConnect | None = None
        self._events = DomainEvents()
        self._lock = threading.RLock()
        self._cache: dict[str, _CachedDomain] = {}
        self._targets: dict[str, int] = {}  # uuid -> last target this backend set live
        self._jobs_supported = True  # the test driver has no job API
        self._host_unknown = False  # the remote host's memory figures were unavailable last time

    # -- connection -------------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: str, tunables: LibvirtTunables | None = None) -> LibvirtBackend:
        """Connect (read-write) and start listening to events; a refused connection is a BackendError."""
        backend = cls(uri, tunables)
        with backend._lock:
            backend._connect_once()
        return backend

    def _connect_once(self) -> libvirt.virConnect:
        ensure_event_loop()
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise BackendError(f"cannot connect to {self.uri}", cause=_message(exc)) from exc
        try:
            conn.setKeepAlive(self.tunables.keepalive_interval_s, self.tunables.keepalive_count)
        except libvirt.libvirtError as exc:  # the test driver has no keepalive: nothing to keep alive
            log.debug("no keepalive on %s: %s", self.uri, _message(exc))
        try:
            self._events.register(conn)
        except libvirt.libvirtError as exc:
            log.warning("no domain events on %s (%s); XML is re-read by age only", self.uri, _message(exc))
        self._conn = conn
        self._cache.clear()
        return conn

    def _alive(self) -> bool:
        if self._conn is None or self._events.closed:
            return False
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._events.deregister()
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError as exc:
                log.debug("closing a dead connection: %s", _message(exc))

    def _connection(self) -> libvirt.virConnect:
        """A live connection: the current one, or a new one (one attempt, no waiting); else
        ConnectionLostError, and the caller decides when to try again."""
        if self._conn is not None and self._alive():
            return self._conn
        if self._conn is not None:
            log.warning("libvirt connection to %s lost; reconnecting", self.uri)
        self._drop()
        try:
            return self._connect_once()
        except BackendError as exc:
            raise ConnectionLostError(
                f"lost the connection to {self.uri} and could not reconnect", cause=exc.cause
            ) from None

    def _call(self, fn: Callable[[libvirt.virConnect], T], vm: str | None = None, what: str = "") -> T:
        """Run ``fn`` on a live connection; once more after a reconnect if the connection died under it.

        Every operation here sets absolute values, so repeating one after a lost connection is safe.
        """
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return fn(conn)
                except libvirt.libvirtError as exc:
                    if not self._alive() and attempt == 1:
                        self._drop()
                        continue
                    raise self._convert(exc, vm, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _convert(self, exc: libvirt.libvirtError, vm: str | None, what: str) -> Exception:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN and vm is not None:
            return UnknownVMError(vm, self._known_names())
        if not self._alive():
            return ConnectionLostError(f"connection to {self.uri} lost during {what or 'a call'}", vm=vm)
        return BackendError(
            f"libvirt failed to {what}" if what else "libvirt call failed", vm=vm, cause=_message(exc)
        )

    def _known_names(self) -> list[str] | None:
        try:
            return [d.name() for d in self._conn.listAllDomains(0)] if self._conn else None
        except libvirt.libvirtError:
            return None

    def close(self) -> None:
        with self._lock:
            self._drop()
            self._cache.clear()

    # -- domain XML cache ---------------------------------------------------------------------------

    def _lookup(self, conn: libvirt.virConnect, vm: str) -> libvirt.virDomain:
        return conn.lookupByName(vm)

    def _apply_events(self) -> None:
        dirty, lifecycle = self._events.take_dirty()
        for uuid in dirty:
            self._cache.pop(uuid, None)
        for uuid in lifecycle:  # a restarted domain boots at its configured target, not ours
            self._targets.pop(uuid, None)

    def _domain_config(self, dom: libvirt.virDomain, *, fresh: bool = False) -> _CachedDomain:
        uuid = dom.UUIDString()
        cached = self._cache.get(uuid)
        now = time.monotonic()
        if not fresh and cached is not None and now - cached.fetched < self.tunables.xml_max_age_s:
            return cached
        entry = _CachedDomain(lvxml.parse_domain(dom.XMLDesc(0)), bool(dom.isPersistent()), now)
        self._cache[uuid] = entry
        return entry

    def _invalidate(self, dom: libvirt.virDomain) -> None:
        self._cache.pop(dom.UUIDString(), None)

    # -- snapshots ----------------------------------------------------------------------------------

    def _guest(self, dom: libvirt.virDomain, record: dict[str, Any]) -> GuestSnapshot:
        entry = self._domain_config(dom)
        cfg = entry.config
        state = lvstats.vm_state(record)
        if state is None:
            state = lvstats.STATE_MAP.get(dom.state()[0], VMState.UNKNOWN)
        raw = lvstats.unprefix_bulk(record)
        if state.active and not lvstats.has_balloon_fields(record) and cfg.balloon.enabled:
            # The test driver (and libvirt before bulk balloon stats) only answers memoryStats().
            raw = dict(dom.memoryStats())
        vcpus, max_vcpus = lvstats.vcpu_counts(record)
        uuid = dom.UUIDString()
        actual = lvstats.actual_bytes(raw) if state.active else None
        max_bytes = lvstats.maximum_bytes(raw) or cfg.max_bytes
        hold = lvstats.hold_reason(
            state, lvstats.state_reason(record), self._job(dom) if state.active else None
        )
        return GuestSnapshot(
            name=dom.name(),
            state=state,
            max_bytes=max_bytes,
            target_bytes=self._targets.get(uuid, cfg.target_bytes) if state.active else cfg.target_bytes,
            actual_bytes=actual,
            stats=lvstats.guest_stats(raw),
            balloon=cfg.balloon,
            policy=cfg.policy,
            vcpus=vcpus or cfg.vcpus,
            max_vcpus=max_vcpus or cfg.max_vcpus,
            cpu_time_ns=lvstats.cpu_time_ns(record),
            disk_read_bytes=lvstats.disk_read_bytes(record) if state.active else None,
            os_type=cfg.os_type,
            persistent=entry.persistent,
            uuid=uuid,
            hold=hold,
            incapable=cfg.incapable,
            virtio_mem=cfg.virtio_mem,
            host_rss_bytes=self._rss(dom, raw) if state.active else None,
        )

    def _job(self, dom: libvirt.virDomain) -> dict[str, Any] | None:
        """The domain's job (migration, save, dump, snapshot...), or None when it has none or the driver
        cannot say. One call per running domain per snapshot: no bulk statistic carries jobs, and a
        migration starts without a lifecycle event."""
        if not self._jobs_supported:
            return None
        try:
            return dict(dom.jobStats(0))
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_SUPPORT:
                self._jobs_supported = False
                return None
            if code == libvirt.VIR_ERR_OPERATION_INVALID:  # stopped since the bulk call
                return None
            raise

    def _rss(self, dom: libvirt.virDomain, raw: dict[str, Any]) -> int | None:
        """The QEMU process's RSS: libvirt's own figure (``balloon.rss``, also over remote URIs), else, on
        this host's system libvirtd, from the QEMU PID libvirt records in its pid file."""
        rss = lvstats.rss_bytes(raw)
        if rss is None and self.local and urlsplit(self.uri).path == "/system":
            pid = hostinfo.read_pidfile(QEMU_PID_DIR / f"{dom.name()}.pid")
            rss = hostinfo.process_rss(pid) if pid is not None else None
        return rss

    def _host(self, conn: libvirt.virConnect, guests: tuple[GuestSnapshot, ...]) -> HostSnapshot:
        now, wall = time.monotonic(), time.time()
        if self.local:
            return hostinfo.local_host_snapshot(guests, now, wall)
        return self._remote_host(conn, guests, now, wall)

    def _remote_host(
        self, conn: libvirt.virConnect, guests: tuple[GuestSnapshot, ...], now: float, wall: float
    ) -> HostSnapshot:
        """What libvirt can tell about a remote (or fake) host: RAM and CPUs; the rest stays None.

        A host whose free memory cannot be read is *held*: its available memory is what is known free
        (nothing), and every guest carries the hold, so that nothing shrinks and nothing grows. It was
        assumed to have all of its RAM free, which let the daemon hand out memory it did not have.
        """
        model, memory_mib, cpus, *_ = conn.getInfo()
        total = memory_mib * MiB
        available: int | None = None
        try:
            node = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
            total = node["total"] * KiB if "total" in node else memory_mib * MiB
            # No MemAvailable over the wire: free + buffers + cached is the closest libvirt offers.
            available = sum(node.get(k, 0) for k in ("free", "buffers", "cached")) * KiB
        except libvirt.libvirtError as stats_error:
            try:
                available = int(conn.getFreeMemory())
            except libvirt.libvirtError as free_error:
                hold = (
                    f"host memory unknown: {self.uri} answers neither getMemoryStats "
                    f"({_message(stats_error)}) nor getFreeMemory ({_message(free_error)})"
                )
                if not self._host_unknown:
                    log.warning("%s; every guest is held (nothing shrinks, nothing grows)", hold)
                self._host_unknown = True
                guests = tuple(replace(g, hold=g.hold or hold) for g in guests)
                return self._host_snapshot(conn, guests, now, wall, total, 0, cpus, model, hold)
        if self._host_unknown:
            log.warning("%s reports its free memory again; guests are no longer held for it", self.uri)
            self._host_unknown = False
        return self._host_snapshot(conn, guests, now, wall, total, available, cpus, model, None)

    def _host_snapshot(
        self,
        conn: libvirt.virConnect,
        guests: tuple[GuestSnapshot, ...],
        now: float,
        wall: float,
        total: int,
        available: int,
        cpus: int,
        model: str,
        hold: str | None,
    ) -> HostSnapshot:
        try:
            hostname = conn.getHostname()
        except libvirt.libvirtError:
            hostname = urlsplit(self.uri).hostname or model
        return HostSnapshot(
            time=now,
            wall_time=wall,
            mem_total=total,
            mem_available=available,
            guests=guests,
            cpu_count=cpus,
            hostname=hostname,
            hold=hold,
        )

    def snapshot(self) -> HostSnapshot:
        def read(conn: libvirt.virConnect) -> HostSnapshot:
            self._apply_events()
            records = conn.getAllDomainStats(lvstats.BULK_STATS, 0)
            guests = []
            for dom, record in records:
                try:
                    guests.append(self._guest(dom, record))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    self._invalidate(dom)  # vanished between the bulk call and its XML: skip it
            live = {g.uuid for g in guests}
            for uuid in set(self._cache) - live:
                self._cache.pop(uuid, None)
            return self._host(conn, tuple(sorted(guests, key=lambda g: g.name)))

        return self._call(read, what="read domain stats")

    def guest(self, vm: str) -> GuestSnapshot:
        def read(conn: libvirt.virConnect) -> GuestSnapshot:
            self._apply_events()
            dom = self._lookup(conn, vm)
            records = conn.domainListGetStats([dom], lvstats.BULK_STATS, 0)
            return self._guest(dom, records[0][1] if records else {})

        return self._call(read, vm, "read domain stats")

    def last_balloon_change(self, vm: str) -> BalloonChangeEvent | None:
        """The last BALLOON_CHANGE event libvirt sent for ``vm`` while this backend was open."""
        return self._events.last_balloon_change(vm)

    # -- changes ------------------------------------------------------------------------------------

    @staticmethod
    def _flags(live: bool, config: bool) -> int:
        return (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (
            libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0
        )

    def _check_where(
        self, vm: str, dom: libvirt.virDomain, persistent: bool, *, live: bool, config: bool
    ) -> None:
        if not live and not config:
            raise InvalidValueError(
                f"change for VM {vm!r}", "neither live nor config", "--live and/or --config"
            )
        if live and not dom.isActive():
            raise RefusedError(f"refused: VM {vm!r} is not running, so nothing can change live; use --config")
        if config and not persistent:
            raise RefusedError(f"refused: VM {vm!r} is transient (no persistent config); drop --config")

    def _inactive_config(self, dom: libvirt.virDomain) -> lvxml.DomainConfig:
        return lvxml.parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def set_target(self, vm: str, target_bytes: int, *, live: bool = True, config: bool = False) -> None:
        if target_bytes <= 0:
            raise InvalidValueError(f"balloon target for VM {vm!r}", target_bytes, "a size above 0")

        def apply(conn: libvirt.virConnect) -> None:
            dom = self._lookup(conn, vm)
            entry = self._domain_config(dom, fresh=True)
            self._check_where(vm, dom, entry.persistent, live=live, config=config)
            limits = [entry.config.max_bytes] if live else []
            if config:
                limits.append(self._inactive_config(dom).max_bytes)
            limit = min(limits)
            if target_bytes > limit:
                raise LimitError(
                    vm, "balloon target", human(target_bytes), f"above its <memory> of {human(limit)}"
                )
            vmem = entry.config.virtio_mem
            if live and vmem is not None:
                self._resize_virtio_mem(dom, vmem, target_bytes, config)
                return
            dom.setMemoryFlags(target_bytes // KiB, self._flags(live, config))
            self._invalidate(dom)
            if live:
                self._targets[dom.UUIDString()] = target_bytes // KiB * KiB

        self._call(apply, vm, "set the balloon target")

    def _resize_virtio_mem(
        self, dom: libvirt.virDomain, vmem: VirtioMem, target_bytes: int, config: bool
    ) -> None:
        """A target for a guest with a virtio-mem device: the blocks above its boot memory go to the
        device (``<requested>``, rounded up to a block), and only a target below the boot memory is left
        to the balloon, which otherwise stays deflated (libvirt's ``setMemory`` moves the balloon on the
        boot memory alone)."""
        requested = vmem.requested_for(target_bytes)
        balloon = min(target_bytes, vmem.boot_bytes) // KiB
        flags = self._flags(True, config)
        dom.updateDeviceFlags(lvxml.virtio_mem_update(dom.XMLDesc(0), requested), flags)
        dom.setMemoryFlags(balloon, self._flags(True, False))
        self._invalidate(dom)
        self._targets[dom.UUIDString()] = balloon * KiB + requested

    def set_max(self, vm: str, max_bytes: int) -> ChangeResult:
        if max_bytes <= 0:
            raise InvalidValueError(f"maximum memory for VM {vm!r}", max_bytes, "a size above 0")

        def apply(conn: libvirt.virConnect) -> ChangeResult:
            dom = self._lookup(conn, vm)
            if not dom.isPersistent():
                raise RefusedError(
                    f"refused: VM {vm!r} is transient; <memory> can only change in a persistent config"
                )
            dom.setMemoryFlags(
                max_bytes // KiB, libvirt.VIR_DOMAIN_MEM_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            )
            self._invalidate(dom)
            active = bool(dom.isActive())
            return ChangeResult(
                live=False,
                next_boot=True,
                message=f"<memory> of {vm} set to {human(max_bytes // KiB * KiB)} in the persistent config"
                + ("; takes effect at the next boot" if active else ""),
            )

        return self._call(apply, vm, "set the maximum memory")

    def set_vcpus(self, vm: str, count: int, *, live: bool = True, config: bool = False) -> ChangeResult:
        def apply(conn: libvirt.virConnect) -> ChangeResult:
            dom = self._lookup(conn, vm)
            entry = self._domain_config(dom, fresh=True)
            self._check_where(vm, dom, entry.persistent, live=live, config=config)
            maximum = entry.config.max_vcpus if live else self._inactive_config(dom).max_vcpus
            if not 1 <= count <= maximum:
                raise LimitError(vm, "vCPU count", str(count), f"allowed is 1 to its maximum of {maximum}")
            dom.setVcpusFlags(count, self._flags(live, config))
            self._invalidate(dom)
            where = " and ".join(w for w, on in (("live", live), ("in the persistent config", config)) if on)
            return ChangeResult(live=live, next_boot=config, message=f"{vm} set to {count} vCPUs {where}")

        return self._call(apply, vm, "set the vCPU count")

    def set_balloon(self, vm: str, change: BalloonChange) -> ChangeResult:
        if change.empty:
            raise InvalidValueError(
                f"balloon change for VM {vm!r}",
                "nothing",
                "at least one of model, autodeflate, free page reporting, stats period",
            )

        def apply(conn: libvirt.virConnect) -> ChangeResult:
            dom = self._lookup(conn, vm)
            persistent = bool(dom.isPersistent())
            active = bool(dom.isActive())
            boot_only = BalloonChange(
                model=change.model,
                autodeflate=change.autodeflate,
                free_page_reporting=change.free_page_reporting,
            )
            if not persistent and not boot_only.empty:
                raise RefusedError(
                    f"refused: VM {vm!r} is transient, so its balloon model, autodeflate and free page "
                    "reporting cannot change (they are fixed at boot); nothing was changed"
                )
            done: list[str] = []
            next_boot = False
            if persistent:
                inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
                before = lvxml.parse_domain(inactive).balloon
                edited = lvxml.apply_balloon_change(inactive, change, vm)
                after = lvxml.parse_domain(edited).balloon
                differences = lvxml.describe_balloon_change(before, after)
                if differences:
                    conn.defineXML(edited)
                    done.append("persistent config: " + ", ".join(differences))
                    next_boot = True
            live = False
            if change.stats_period is not None and active:
                live_balloon = self._domain_config(dom, fresh=True).config.balloon
                if not live_balloon.enabled:
                    raise RefusedError(
                        f"refused: VM {vm!r} runs without a balloon device; no live stats period"
                    )
                dom.setMemoryStatsPeriod(change.stats_period, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                done.append(f"live stats period {change.stats_period} s")
                live = True
            self._invalidate(dom)
            if not done:
                return ChangeResult(live=False, next_boot=False, message=f"{vm}: balloon already as asked")
            boot_note = "; model, autodeflate and free page reporting take effect at the next boot"
            return ChangeResult(
                live=live,
                next_boot=next_boot,
                message=f"{vm}: "
                + "; ".join(done)
                + (boot_note if next_boot and not boot_only.empty else ""),
            )

        return self._call(apply, vm, "change the balloon device")

    @staticmethod
    def _metadata_flags(dom: libvirt.virDomain) -> int:
        if not dom.isActive():
            return int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        return int(libvirt.VIR_DOMAIN_AFFECT_LIVE) | (
            int(libvirt.VIR_DOMAIN_AFFECT_CONFIG) if dom.isPersistent() else 0
        )

    def get_policy(self, vm: str) -> GuestPolicy:
        def read(conn: libvirt.virConnect) -> GuestPolicy:
            dom = self._lookup(conn, vm)
            return self._domain_config(dom, fresh=True).config.policy

        return self._call(read, vm, "read the policy metadata")

    def set_policy(self, vm: str, policy: GuestPolicy) -> None:
        check_policy(policy, vm)

        def apply(conn: libvirt.virConnect) -> None:
            dom = self._lookup(conn, vm)
            flags = self._metadata_flags(dom)
            if lvxml.policy_is_empty(policy):
                dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, lvxml.POLICY_NS, flags)
            else:
                dom.setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    lvxml.policy_to_xml(policy),
                    lvxml.POLICY_PREFIX,
                    lvxml.POLICY_NS,
                    flags,
                )
            self._invalidate(dom)

        self._call(apply, vm, "store the policy metadata")
