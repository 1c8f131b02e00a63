"""Fixtures for tests on plain QEMU guests (no libvirt), for the ``qmp://`` backend.

The tests in this directory get them as any fixture (libvirt's ``rig`` and ``make_guests`` come from the
parent conftest):

    def test_something(make_qemu_guests, tmp_path):
        a, b = make_qemu_guests(2, directory=tmp_path)        # QemuSpec fields; GuestSpec ones via guest=
        a.qmp, a.pid, a.control.alloc(100)                    # the socket, QEMU's PID, the agent

Every guest a test boots is stopped (by its PID) when the test ends, even when it fails, and the session
fails if a QEMU it started still runs at the end. Without QEMU or qemu.qmp the tests skip with the
reason, except under ``CI=true`` where they fail with it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoballoon.rig.errors import RigError
from autoballoon.rig.qemu import QemuGuest, QemuRig, QemuSpec, open_qemu_rig
from tests.needs import missing, need_module

QemuFactory = Callable[..., list[QemuGuest]]
#: Unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer, so sockets get a short dir.
SOCKET_DIR_PREFIX = "/tmp/abq-"


@pytest.fixture(scope="session")
def qemu_rig() -> Iterator[QemuRig]:
    need_module("qemu.qmp", "pip install 'autoballoon[qmp]' (make test installs it)")
    try:
        rig = open_qemu_rig()
    except RigError as exc:
        missing(f"plain-QEMU rig unavailable: {exc}")
    try:
        yield rig
    finally:
        left = rig.close()
    if left:
        pytest.fail(f"the plain-QEMU rig left QEMU processes running: {', '.join(left)}")


def spec(**fields: Any) -> QemuSpec:
    """A QemuSpec from keyword fields; ``guest=`` takes a GuestSpec."""
    return QemuSpec(**fields)


@pytest.fixture
def make_qemu_guests(qemu_rig: QemuRig) -> Iterator[QemuFactory]:
    """``make_qemu_guests(n, **QemuSpec fields)``: n plain-QEMU guests booted at once, stopped after."""
    mine: list[QemuGuest] = []

    def factory(n: int = 1, **fields: Any) -> list[QemuGuest]:
        guests = qemu_rig.boot([spec(**fields) for _ in range(n)])
        mine.extend(guests)
        return guests

    try:
        yield factory
    finally:
        for guest in mine:
            with contextlib.suppress(Exception):
                qemu_rig.stop(guest)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short, private directory for QMP sockets (removed after the test)."""
    with tempfile.TemporaryDirectory(prefix=SOCKET_DIR_PREFIX) as path:
        yield Path(path)
