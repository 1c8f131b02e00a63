"""LibvirtBackend directly against real guests: what only libvirt does (a stats period set live on a guest
booted without one, libvirtd restarts). What every backend does alike (field mapping, targets, events,
refusals, host RSS) is in tests/real/qmp/test_backend_contract.py, run on libvirt and on the QMP backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from autoballoon.backends.libvirt import LibvirtBackend, LibvirtTunables
from autoballoon.errors import ConnectionLostError
from autoballoon.model import BalloonChange
from autoballoon.rig import daemons
from autoballoon.rig.domains import URI, Guest
from autoballoon.units import MiB
from tests.real.conftest import Rig, rig_unavailable
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

DEADLINE_S = 5.0
STATS_WAIT_S = 1.5


@pytest.fixture
def backend(rig: Rig) -> Iterator[Any]:
    b = LibvirtBackend.open(URI)
    try:
        yield b
    finally:
        b.close()


def test_a_stats_period_set_live_on_a_guest_without_one(backend: Any, make_guests: Any) -> None:
    (guest,) = make_guests(1, stats_period=None)
    g = backend.guest(guest.name)
    assert not g.balloon.stats_period
    # The Linux driver reports once when it probes, so stats may be "present" -- but they never refresh.
    first = g.stats.last_update
    time.sleep(2 * STATS_WAIT_S)
    assert backend.guest(guest.name).stats.last_update == first
    backend.set_balloon(guest.name, BalloonChange(stats_period=1))  # applied live as well
    wait_for(
        lambda: backend.guest(guest.name).stats.last_update,
        lambda v: v is not None and v != first,
        DEADLINE_S,
        "fresh stats after setting a stats period",
    )
    assert backend.guest(guest.name).balloon.stats_period == 1


def test_next_snapshot_after_a_libvirtd_restart_succeeds(
    rig: Rig, backend: Any, guest_pair: list[Guest]
) -> None:
    reason = daemons.libvirtd_restartable()
    if reason is not None:
        rig_unavailable(reason)
    names = {g.name for g in guest_pair}
    assert names <= set(backend.snapshot().names)
    old_pid = daemons.load_started()["libvirtd"]
    started = time.monotonic()
    new_pid = rig.restart_libvirtd()
    assert new_pid != old_pid
    snap = backend.snapshot()  # the first call after: reconnects (with back-off) and answers
    print(f"libvirtd restarted and snapshot answered in {time.monotonic() - started:.1f} s")
    assert names <= set(snap.names)
    # No stale domain handles: a change after the reconnect reaches the guest.
    name = guest_pair[0].name
    backend.set_target(name, 400 * MiB)
    try:
        wait_for(lambda: backend.guest(name).actual_bytes, lambda v: v == 400 * MiB, DEADLINE_S, "actual")
    finally:
        backend.set_target(name, 512 * MiB)
        wait_for(
            lambda: backend.guest(name).actual_bytes, lambda v: v == 512 * MiB, DEADLINE_S * 2, "deflate"
        )


#: How soon a call on a connection whose libvirtd is gone must fail.
LOST_WITHIN_S = 2.0


def test_a_daemon_that_stays_down_is_a_connection_lost_error(rig: Rig, guest_pair: list[Guest]) -> None:
    reason = daemons.libvirtd_restartable()
    if reason is not None:
        rig_unavailable(reason)
    quick = LibvirtBackend.open(URI, LibvirtTunables())
    try:
        daemons.stop_libvirtd()
        try:
            started = time.monotonic()
            with pytest.raises(ConnectionLostError, match="qemu:///system"):
                quick.snapshot()
            # One attempt, no sleeping with the backend's lock held: it took ~8 s of back-off, which a
            # stopping daemon (SIGTERM) had to wait out.
            assert time.monotonic() - started < LOST_WITHIN_S
        finally:
            rig.started_daemons["libvirtd"] = daemons.start_libvirtd()
        assert {g.name for g in guest_pair} <= set(quick.snapshot().names)  # and it comes back by itself
    finally:
        quick.close()
