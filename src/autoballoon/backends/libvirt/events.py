"""libvirt's event loop and the domain events the backend listens to.

libvirt delivers events (and runs keepalive) only while something runs its event loop, and the default
loop must be registered *before* the first connection is opened. One daemon thread per process runs it.
The callbacks only record facts (which domains changed, the last balloon change, whether the connection
closed); the backend acts on them in its own thread at its next call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import libvirt

from autoballoon.units import KiB

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_started = False
#: Pause after an exception from the loop so a persistent failure cannot spin a core.
LOOP_ERROR_PAUSE_S = 0.5


def _run_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # the loop must outlive any one failing callback
            log.exception("libvirt event loop iteration failed")
            time.sleep(LOOP_ERROR_PAUSE_S)


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and start its thread, once per process."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_loop, name="libvirt-events", daemon=True).start()
        _loop_started = True


@dataclass(frozen=True, slots=True)
class BalloonChangeEvent:
    """The guest moved its balloon: ``actual`` in bytes, at ``time`` (monotonic seconds)."""

    actual_bytes: int
    time: float


class DomainEvents:
    """Event subscriptions on one connection and what they have seen since the backend last looked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._balloon: dict[str, BalloonChangeEvent] = {}
        self._lifecycle: set[str] = set()
        self._closed = False
        self._callback_ids: list[int] = []
        self._conn: libvirt.virConnect | None = None

    # -- callbacks (event-loop thread) ------------------------------------------------------------

    def _on_lifecycle(
        self, _conn: object, dom: libvirt.virDomain, _event: int, _detail: int, _op: object
    ) -> None:
        with self._lock:
            uuid = dom.UUIDString()
            self._dirty.add(uuid)
            self._lifecycle.add(uuid)

    def _on_balloon(self, _conn: object, dom: libvirt.virDomain, actual_kib: int, _op: object) -> None:
        with self._lock:
            uuid = dom.UUIDString()
            self._dirty.add(uuid)
            self._balloon[dom.name()] = BalloonChangeEvent(actual_kib * KiB, time.monotonic())

    def _on_memory_device(
        self, _conn: object, dom: libvirt.virDomain, _alias: str, _size_kib: int, _op: object
    ) -> None:
        """A virtio-mem device plugged or unplugged blocks: its ``<current>`` in the XML changed."""
        with self._lock:
            self._dirty.add(dom.UUIDString())

    def _on_close(self, _conn: object, reason: int, _op: object) -> None:
        log.warning("libvirt connection closed (reason %d)", reason)
        with self._lock:
            self._closed = True

    # -- backend side ---------------------------------------------------------------------------------

    def register(self, conn: libvirt.virConnect) -> None:
        """Subscribe on a fresh connection (after every reconnect: old subscriptions died with it)."""
        self._conn = conn
        with self._lock:
            self._closed = False
        self._callback_ids = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            ),
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE, self._on_balloon, None
            ),
        ]
        with contextlib.suppress(libvirt.libvirtError, AttributeError):  # libvirt before 7.9 has none
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None,
                    libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE,
                    self._on_memory_device,
                    None,
                )
            )
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)

    def deregister(self) -> None:
        """Drop the subscriptions; errors are ignored because the connection may already be gone."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        for cid in self._callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(cid)
        self._callback_ids = []
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def take_dirty(self) -> tuple[set[str], set[str]]:
        """UUIDs whose XML may have changed, and those that had a lifecycle event, since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            lifecycle, self._lifecycle = self._lifecycle, set()
        return dirty, lifecycle

    def last_balloon_change(self, vm: str) -> BalloonChangeEvent | None:
        with self._lock:
            return self._balloon.get(vm)
