"""What only the QMP backend does, on plain QEMU guests: find an anonymous balloon, lose a socket and get it
back (a new QEMU on the same path is a new VM), live beside another client of the one-client monitor,
and read a Proxmox-style node (sockets named by VM id, names and Proxmox's balloon settings from
``<vmid>.conf``) through the backend and the command line."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autoballoon import safety
from autoballoon.backends import open_backend
from autoballoon.errors import BackendError, ConnectionLostError, RefusedError
from autoballoon.model import VMState
from autoballoon.rig.domains import GuestSpec
from autoballoon.rig.qemu import kill
from autoballoon.units import MiB
from tests.rig.cli import run_cli
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

GUEST_BYTES = 512 * MiB
DEADLINE_S = 5.0


def test_one_socket_with_an_anonymous_balloon(make_qemu_guests: Any, socket_dir: Path) -> None:
    (guest,) = make_qemu_guests(1, directory=socket_dir, balloon_id=None)  # /machine/peripheral-anon
    backend = open_backend(f"qmp://{guest.qmp}")
    try:
        g, _ = wait_for(lambda: backend.guest(guest.name), lambda g: g.stats.present, 20, "stats")
        assert g.balloon.model == "virtio" and g.balloon.stats_period == 1
        assert not g.balloon.autodeflate and not g.balloon.free_page_reporting
        assert [x.name for x in backend.snapshot().guests] == [guest.name]  # QEMU's -name
        backend.set_target(guest.name, 256 * MiB)
        wait_for(
            lambda: backend.guest(guest.name).actual_bytes, lambda v: v == 256 * MiB, DEADLINE_S, "actual"
        )
    finally:
        backend.close()


def test_a_vm_with_memory_in_dimms_is_left_alone(make_qemu_guests: Any, socket_dir: Path) -> None:
    """QEMU sizes the balloon on the boot memory and hot-plugged DIMMs together, this backend on the boot
    memory: such a VM is excluded with that reason, and a target for it is refused, changing nothing."""
    (guest,) = make_qemu_guests(1, directory=socket_dir, dimm_bytes=128 * MiB)
    backend = open_backend(f"qmp://{guest.qmp}")
    try:
        g = backend.guest(guest.name)
        assert g.incapable is not None and "DIMMs (128.0 MiB)" in g.incapable, g
        assert safety.exclusion(g, g.policy) == g.incapable
        with pytest.raises(RefusedError, match="DIMMs"):
            backend.set_target(guest.name, 256 * MiB)
        assert backend.guest(guest.name).actual_bytes == g.actual_bytes
    finally:
        backend.close()


def test_a_lost_socket_is_a_lost_connection_and_a_new_qemu_a_new_vm(
    make_qemu_guests: Any, socket_dir: Path
) -> None:
    (first,) = make_qemu_guests(1, directory=socket_dir, stem="vm", vm_name="same")
    backend = open_backend(f"qmp://{first.qmp}")
    try:
        backend.set_target("same", 300 * MiB)
        assert backend.guest("same").target_bytes == 300 * MiB
        kill(first)  # as a crash: the socket file stays, nothing accepts on it
        started = time.monotonic()
        with pytest.raises(ConnectionLostError, match=r"vm\.qmp"):
            backend.snapshot()
        assert time.monotonic() - started < 2.0  # one attempt, no sleeping in the backend
        (second,) = make_qemu_guests(1, directory=socket_dir, stem="vm", vm_name="same")
        snap = backend.snapshot()  # the socket came back: the same backend reads the new QEMU
        (g,) = snap.guests
        assert g.name == "same" and g.state is VMState.RUNNING
        assert g.target_bytes == GUEST_BYTES  # a new QEMU boots at its full size: the old target is gone
        assert g.host_rss_bytes is not None and second.pid != first.pid
    finally:
        backend.close()


class HeldMonitor:
    """Another QMP client that keeps a socket's monitor to itself (as Proxmox's qm does for a moment)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ready = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        from qemu.qmp import QMPClient

        client = QMPClient("holder")
        await client.connect(str(self.path))
        self.ready.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        await client.disconnect()

    def __enter__(self) -> HeldMonitor:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.thread.join(10)


def test_a_monitor_held_by_another_client(make_qemu_guests: Any, socket_dir: Path) -> None:
    busy, free = make_qemu_guests(2, directory=socket_dir)
    backend = open_backend(f"qmp://{socket_dir}/?glob=*.qmp")
    try:
        with HeldMonitor(busy.qmp):
            with pytest.raises(BackendError, match="another client"):
                backend.guest(busy.name)
            snap = backend.snapshot()  # one busy socket does not stop the others from being read
            assert free.name in snap.names and busy.name not in snap.names
        # Released: readable again once QEMU has closed the other session (a connect in that moment can
        # fail its handshake, and the VM is then skipped for that tick only).
        wait_for(
            lambda: set(backend.snapshot().names),
            lambda names: {busy.name, free.name} <= names,
            10,
            "both monitors readable again",
        )
        # Without ?hold the backend keeps no connection between calls, so another client gets in at once.
        with HeldMonitor(free.qmp):
            pass
        # Seen before, a VM that cannot be read for a tick is reported as last seen, held: the daemon
        # keeps what it knows of it (its target unchanged, not someone else's change; not forgotten).
        seen = {g.name: g for g in backend.snapshot().guests}[busy.name]
        with HeldMonitor(busy.qmp):
            held = {g.name: g for g in backend.snapshot().guests}[busy.name]
        assert held.state is VMState.UNKNOWN and "cannot read it now" in (held.hold or ""), held
        assert (held.target_bytes, held.max_bytes) == (seen.target_bytes, seen.max_bytes)
    finally:
        backend.close()


def write_conf(directory: Path, vmid: str, text: str) -> None:
    (directory / f"{vmid}.conf").write_text(text)


def test_a_proxmox_node(make_qemu_guests: Any, socket_dir: Path, tmp_path: Path) -> None:
    run = socket_dir / "qemu-server"
    conf = tmp_path / "pve"
    run.mkdir()
    conf.mkdir()
    make_qemu_guests(1, directory=run, stem="101", vm_name="web01")
    make_qemu_guests(1, directory=run, stem="102", vm_name="db", guest=GuestSpec(balloon_model="none"))
    write_conf(conf, "101", "memory: 512\nballoon: 256\nshares: 500\nname: web01\nostype: l26\n")
    write_conf(conf, "102", "memory: 512\nballoon: 0\nname: db\nostype: win11\n")
    write_conf(conf, "103", "memory: 2048\nname: old\n\n[snap]\nmemory: 4096\n")
    uri = f"proxmox://{run}?conf={conf}"
    backend = open_backend(uri)
    try:
        snap = backend.snapshot()
        assert snap.names == ["db", "old", "web01"]
        w, d, old = snap.guest("web01"), snap.guest("db"), snap.guest("old")
        assert w is not None and d is not None and old is not None
        assert (w.policy.min_bytes, w.policy.shares, w.os_type, w.persistent) == (
            256 * MiB,
            500,
            "linux",
            True,
        )
        assert w.state is VMState.RUNNING and w.max_bytes == GUEST_BYTES and w.host_rss_bytes
        assert d.balloon.model == "none" and d.policy.exclude and d.os_type == "windows"
        assert old.state is VMState.SHUTOFF and old.max_bytes == 2048 * MiB and old.actual_bytes is None
        assert backend.guest("101").name == "web01"  # by VM id too
    finally:
        backend.close()
    listed = {row["name"]: row for row in json.loads(run_cli("list", "--json", uri=uri, check=True).stdout)}
    assert listed["db"]["status"] == "excluded" and listed["old"]["state"] == "shutoff"
    assert listed["web01"]["host_rss_bytes"] > 32 * MiB
    assert run_cli("setmem", "101", "300M", "--live", uri=uri, check=True).returncode == 0
    info = json.loads(run_cli("info", "web01", "--json", uri=uri, check=True).stdout)
    assert info["target_bytes"] in (300 * MiB, info["actual_bytes"])  # a new process knows no target
    wait_for(
        lambda: json.loads(run_cli("info", "101", "--json", uri=uri, check=True).stdout)["actual_bytes"],
        lambda v: v == 300 * MiB,
        20,
        "balloon set by the CLI",
    )
    refused = run_cli("setmaxmem", "web01", "1G", "--config", uri=uri)
    assert refused.returncode == 2 and "qm set" in refused.stderr
