"""Fixtures for tests against real libvirtd + QEMU (TCG) + Linux guests with a real balloon driver.

How to use them (daemon end-to-end tests, health-guard tests, ...):

    pytestmark = pytest.mark.realvm

    def test_something(make_guests):
        a, b = make_guests(2)                      # booted in parallel, ~3 s; removed after the test
        c, = make_guests(1, autodeflate=True)      # any GuestSpec field: persistent=True, memory_mib=...
        a.name                                     # libvirt domain name (abtest-<pid>-<n>)
        a.control.alloc(150)                       # GuestControl: alloc/free/free_all/held/meminfo/
        a.control.meminfo()["MemTotal"]            #   oomkills/cpuburn/burncpu_when_ballooned (bytes)

    def test_other(guest_pair):                    # two plain guests shared by the whole module:
        ...                                        #   leave them as you found them (free, full target)

``rig`` (session) holds the libvirt connection (``rig.connection()``), the guest image and
``rig.restart_libvirtd()``. Everything a session boots is destroyed at teardown even when tests fail;
leftovers of dead sessions are swept at start. Without a working rig the tests skip with the reason,
except under ``CI=true`` where they fail with it. Daemons the rig started stay up for the next run,
except under CI (or AUTOBALLOON_RIG_STOP_DAEMONS=1), where those PIDs (and only those) are stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import pytest

from tests.needs import missing
from tests.rig import daemons
from tests.rig.domains import (
    Guest,
    GuestSpec,
    boot,
    connection_answers,
    destroy,
    open_connection,
    quiet_libvirt,
    sweep,
)
from tests.rig.errors import RigError
from tests.rig.image import GuestImage, build_image

CI = os.environ.get("CI") == "true"
STOP_DAEMONS = CI or os.environ.get("AUTOBALLOON_RIG_STOP_DAEMONS") == "1"


def rig_unavailable(reason: str) -> NoReturn:
    """Under CI a missing rig is a failure; on a workstation the real-VM tests skip, saying why."""
    missing(f"real-VM rig unavailable: {reason}")


@dataclass
class Rig:
    """The session's libvirt connection, guest image, and every guest it booted."""

    image: GuestImage
    started_daemons: dict[str, int]
    guests: list[Guest] = field(default_factory=list)
    _conn: Any = None

    def connection(self) -> Any:
        """A live ``libvirt.virConnect`` to qemu:///system (re-opened after a libvirtd restart)."""
        import libvirt

        if not connection_answers(self._conn):
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
            self._conn = open_connection()
        return self._conn

    def boot(self, specs: list[GuestSpec]) -> list[Guest]:
        """Boot guests in parallel (all started, then all awaited); they are removed at session end."""
        guests = boot(self.connection(), self.image, specs)
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

    def close(self) -> None:
        for guest in list(self.guests):
            with contextlib.suppress(Exception):
                self.destroy(guest)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    try:
        import libvirt
    except ImportError:
        rig_unavailable("libvirt-python is not installed: pip install 'autoballoon[libvirt]'")
    quiet_libvirt()
    before = daemons.load_started()
    try:
        started = daemons.ensure_daemons()
        image = build_image()
        state = Rig(image=image, started_daemons={k: v for k, v in started.items() if before.get(k) != v})
        sweep(state.connection())
    except (RigError, libvirt.libvirtError, OSError) as exc:
        rig_unavailable(str(exc))
    try:
        yield state
    finally:
        state.close()
        if STOP_DAEMONS and state.started_daemons:
            daemons.stop_started()


GuestFactory = Callable[..., list[Guest]]


@pytest.fixture
def make_guests(rig: Rig) -> Iterator[GuestFactory]:
    """``make_guests(n, **GuestSpec fields)``: n guests booted at once, destroyed when the test ends."""
    mine: list[Guest] = []

    def factory(n: int = 1, **spec: Any) -> list[Guest]:
        guests = rig.boot([replace(GuestSpec(), **spec) for _ in range(n)])
        mine.extend(guests)
        return guests

    try:
        yield factory
    finally:
        for guest in mine:
            with contextlib.suppress(Exception):
                rig.destroy(guest)


@pytest.fixture(scope="module")
def guest_pair(rig: Rig) -> Iterator[list[Guest]]:
    """Two plain transient guests (512 MiB, no autodeflate, stats every second) shared by a module."""
    guests = rig.boot([GuestSpec(), GuestSpec()])
    try:
        yield guests
    finally:
        for guest in guests:
            with contextlib.suppress(Exception):
                rig.destroy(guest)
