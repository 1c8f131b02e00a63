"""Fixtures for tests against real libvirtd + QEMU (TCG) + Linux guests with a real balloon driver.

How to use them (daemon end-to-end tests, health-guard tests, ...):

    pytestmark = pytest.mark.realvm

    def test_something(make_guests):
        a, b = make_guests(2)                      # booted in parallel, ~3 s; removed after the test
        c, = make_guests(1, autodeflate=True)      # any GuestSpec field: persistent=True, swap_bytes=...
        a.name                                     # libvirt domain name (abtest-<pid>-<n>)
        a.control.alloc(150)                       # GuestControl: alloc/free/free_all/held/meminfo/
        a.control.meminfo()["MemTotal"]            #   oomkills/cpuburn/burncpu_when_ballooned (bytes)

    def test_other(guest_pair):                    # two plain guests shared by the whole module:
        ...                                        #   leave them as you found them (free, full target)

``rig`` (session) holds the libvirt connection (``rig.connection()``), the guest image and
``rig.restart_libvirtd()``. Everything a session boots is destroyed at teardown even when tests fail;
leftovers of dead sessions are swept at start. Without a working rig the tests skip with the reason,
except under ``CI=true`` where they fail with it. The libvirtd/virtlogd a session started are stopped
(by PID) when it ends, and the session fails if they are still running: the suite leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, NoReturn

import pytest

from autoballoon.rig.domains import Guest, GuestSpec
from autoballoon.rig.errors import RigError
from autoballoon.rig.session import RigSession, open_session
from tests.needs import missing


def rig_unavailable(reason: str) -> NoReturn:
    """Under CI a missing rig is a failure; on a workstation the real-VM tests skip, saying why."""
    missing(f"real-VM rig unavailable: {reason}")


#: The session's rig, as the tests call it.
Rig = RigSession


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    try:
        state = open_session()
    except RigError as exc:
        rig_unavailable(str(exc))
    try:
        yield state
    finally:
        left = state.close()
    if left:
        pytest.fail(f"the rig session left daemons it started running: {', '.join(left)}")


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
