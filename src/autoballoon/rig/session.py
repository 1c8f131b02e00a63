"""One user of the rig: its libvirt connection, guest image, the guests it booted, the daemons it started.

A session removes every guest it booted and stops (by PID) the libvirtd/virtlogd it started when it
closes, even after a failure: whoever uses the rig (a test session, a benchmark) leaves nothing running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import libvirt

from autoballoon.rig import daemons
from autoballoon.rig.debian import DebianImage, build_debian_image
from autoballoon.rig.domains import (
    Guest,
    GuestSpec,
    boot,
    connection_answers,
    destroy,
    open_connection,
    quiet_libvirt,
    sweep,
)
from autoballoon.rig.errors import RigError
from autoballoon.rig.image import GuestImage, build_image


@dataclass
class RigSession:
    """The session's libvirt connection, guest image, and every guest it booted."""

    image: GuestImage
    #: The daemons this session started (name -> PID); only these are stopped at the end.
    started_daemons: dict[str, int]
    guests: list[Guest] = field(default_factory=list)
    _conn: Any = None
    _debian: DebianImage | None = None

    def debian_image(self) -> DebianImage:
        """The production-like guest's image, built (or found in the cache) the first time it is asked for:
        sessions that boot only busybox guests never pay for it."""
        if self._debian is None:
            self._debian = build_debian_image()
        return self._debian

    def connection(self) -> Any:
        """A live ``libvirt.virConnect`` to qemu:///system (re-opened after a libvirtd restart)."""
        if not connection_answers(self._conn):
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
            self._conn = open_connection()
        return self._conn

    def boot(self, specs: Sequence[GuestSpec]) -> list[Guest]:
        """Boot guests in parallel (all started, then all awaited); they are removed when the session ends."""
        debian = self.debian_image() if any(s.kind == "debian" for s in specs) else None
        guests = boot(self.connection(), self.image, list(specs), debian)
        self.guests.extend(guests)
        return guests

    def destroy(self, guest: Guest) -> None:
        guest.control.close()
        destroy(self.connection(), guest.name)
        if guest in self.guests:
            self.guests.remove(guest)

    def restart_libvirtd(self, down_s: float = 0.0) -> int:
        """Restart libvirtd (only one the rig started, by PID); running guests survive. New PID."""
        pid = daemons.restart_libvirtd(down_s)
        self.started_daemons["libvirtd"] = pid
        return pid

    def close(self) -> list[str]:
        """Remove every guest, close the connection, stop the daemons this session started.

        Returns the daemons still running afterwards (``name[pid]``): empty unless a stop failed.
        """
        for guest in list(self.guests):
            with contextlib.suppress(Exception):
                self.destroy(guest)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        daemons.stop_started(self.started_daemons)
        return daemons.still_running(self.started_daemons)


def open_session() -> RigSession:
    """Start what is missing (daemons), build the image, sweep leftovers of dead sessions.

    Raises :class:`RigError` (with the reason) when the rig cannot work on this host.
    """
    quiet_libvirt()
    before = daemons.load_started()
    started = daemons.ensure_daemons()
    mine = {k: v for k, v in started.items() if before.get(k) != v}
    try:
        session = RigSession(image=build_image(), started_daemons=mine)
        sweep(session.connection())
    except (RigError, libvirt.libvirtError, OSError) as exc:
        daemons.stop_started(mine)
        raise RigError(str(exc)) from exc
    return session
