"""Faults on the real stack while ``autoballoon run`` manages real guests: the daemon survives each one, and
each guest ends where it should.

- libvirtd killed (SIGKILL) and restarted mid-run: the daemon reconnects and goes on ballooning; with
  libvirtd down, SIGTERM still stops it at once (a reconnect back-off used to hold it for ~8 s);
- a VM destroyed while the daemon is acting on it, and a QEMU process killed: the others go on;
- a guest paused: held at its target (never shrunk) with libvirt's reason, ballooned again once resumed;
- a guest's stats period set to 0: held once its stats go stale, managed again when they come back;
- the journal's file system full (a 64 KiB tmpfs made for the test): ballooning goes on, the journal
  keeps whole lines, and says what it lost once there is room again;
- a VM with a libvirt job in progress, as in a migration: held until the job ends. A real migration
  needs a second host, so the job is a live core dump into a pipe nobody reads: libvirt runs it as an
  outgoing migration of the guest's memory into the pipe (qemuMigrationSrcToFile), which stays in
  progress until the test aborts it.

Each test boots its own 512 MiB guests and runs its own daemon, which manages only those guests
(config ``manage``), so other tests' guests on the same libvirtd are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from autoballoon.journal import read_journal
from autoballoon.rig import daemons
from autoballoon.rig.domains import Guest
from autoballoon.units import KiB, MiB
from tests.real.conftest import Rig, rig_unavailable
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

URI = "qemu:///system"
GUEST_MIB = 512
#: An idle 512 MiB rig guest is ballooned well below its max; below this it has been shrunk.
SHRUNK_BELOW = 448 * MiB
SHRINK_TIMEOUT_S = 90.0
INTERVAL_S = 1.0
#: How long a held guest is watched for a change it must not get (several ticks).
WATCH_S = 6.0
#: How far libvirt's ``currentMemory`` may sit below the daemon's target at the end of :func:`assert_held`:
#: the policy's ``grow_min_step`` (1 MiB), a KiB rounding on top.
HELD_SLACK = 2 * MiB
#: A stopping daemon must be gone this soon after SIGTERM, even with libvirtd down.
STOP_WITHIN_S = 3.0
EXIT_TIMEOUT_S = 20.0
STATS_STALE_S = 3


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    journal: Path
    port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def vms(self) -> dict[str, dict[str, Any]]:
        """The daemon's own view of its VMs (status, reason, target), from its JSON API."""
        url = f"http://127.0.0.1:{self.port}/api/v1/vms"
        with urllib.request.urlopen(url, timeout=5) as reply:
            rows = json.loads(reply.read())
        return {row["name"]: row for row in rows}

    def entries(self) -> list[dict[str, Any]]:
        return read_journal(self.journal) if self.journal.exists() else []

    def kinds(self) -> set[str]:
        return {e["kind"] for e in self.entries()}

    def status(self, guest: Guest) -> str:
        return str(self.vms()[guest.name]["status"])

    def stop(self) -> float:
        """SIGTERM; the seconds it took to exit (asserting a clean exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(EXIT_TIMEOUT_S) == 0, self.log.read_text()[-3000:]
        return time.monotonic() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_daemon(tmp_path: Path, guests: list[Guest], *, journal: Path | None = None) -> Iterator[Daemon]:
    """``autoballoon run`` on the rig's libvirtd, managing ``guests`` only; killed if a test leaves it."""
    journal = journal or tmp_path / "journal.jsonl"
    config = tmp_path / "autoballoon.toml"
    names = ", ".join(f'"{g.name}"' for g in guests)
    config.write_text(
        f"""
interval = {INTERVAL_S}
journal = "{journal}"
state = "{tmp_path / "state.json"}"
on_exit = "hold"
manage = [{names}]
[tunables]
stats_stale_s = {STATS_STALE_S}
[health]
enabled = false  # its host-load pause would hold every shrink on a rig shared by other test runs
"""
    )
    port = _free_port()
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoballoon", "--connect", URI, "run", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    daemon = Daemon(proc, journal, port, log_path)
    try:
        wait_for(lambda: _answers(daemon), bool, 30, "the daemon's API")
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        print(log_path.read_text()[-4000:])


def _answers(daemon: Daemon) -> bool:
    assert daemon.alive(), daemon.log.read_text()
    try:
        return bool(daemon.vms())
    except OSError:
        return False


def balloon(rig: Rig, guest: Guest) -> int:
    """The guest's current memory as libvirt reports it (it follows the balloon)."""
    return int(rig.connection().lookupByName(guest.name).info()[2]) * KiB


def wait_shrunk(rig: Rig, daemon: Daemon, guests: list[Guest], what: str) -> None:
    def sizes() -> list[int]:
        assert daemon.alive(), daemon.log.read_text()[-3000:]
        return [balloon(rig, g) for g in guests]

    wait_for(sizes, lambda s: all(x < SHRUNK_BELOW for x in s), SHRINK_TIMEOUT_S, what)


def assert_held(rig: Rig, daemon: Daemon, guest: Guest, *reasons: str) -> None:
    """Over WATCH_S, the daemon never lowers the guest's target below the one it had when it was held, and
    says why (one of ``reasons``); the balloon stays there too. (The daemon's target, not libvirt's
    ``currentMemory``: the two are read from different sources and may disagree for a moment by the
    last move, which was decided while the guest still had stats.)"""
    start = daemon.vms()[guest.name]["target_bytes"]
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        row = daemon.vms()[guest.name]
        assert row["target_bytes"] >= start, (row, start)
        assert any(r in row["status_reason"] for r in reasons), row
        time.sleep(0.5)
    assert balloon(rig, guest) >= start - HELD_SLACK


def _rig_libvirtd(rig: Rig) -> int:
    """The PID of the libvirtd the rig started (only that one may be killed)."""
    reason = daemons.libvirtd_restartable()
    if reason is not None:
        rig_unavailable(reason)
    return daemons.load_started()["libvirtd"]


# --- libvirtd ------------------------------------------------------------------------------------------


def test_libvirtd_killed_restarted_and_stopped(rig: Rig, make_guests: Any, tmp_path: Path) -> None:
    guests = make_guests(2)
    pid = _rig_libvirtd(rig)
    with running_daemon(tmp_path, guests) as daemon:
        os.kill(pid, signal.SIGKILL)  # no goodbye: clients find the socket dead
        wait_for(lambda: "backend-error" in daemon.kinds(), bool, 30, "a lost connection journalled")
        time.sleep(2 * INTERVAL_S)
        assert daemon.alive(), daemon.log.read_text()
        rig.started_daemons["libvirtd"] = daemons.start_libvirtd()
        wait_shrunk(rig, daemon, guests, "guests ballooned after libvirtd came back")
        assert "reconnected" in daemon.kinds()

        daemons.stop_libvirtd()  # and with libvirtd gone, a stop must not wait for a reconnect back-off
        try:
            time.sleep(3 * INTERVAL_S)
            assert daemon.alive()
            took = daemon.stop()
        finally:
            rig.started_daemons["libvirtd"] = daemons.start_libvirtd()
        assert took < STOP_WITHIN_S, f"SIGTERM took {took:.1f} s with libvirtd down"
    assert {g.name: g.control.oomkills() for g in guests} == {g.name: 0 for g in guests}


# --- VMs that vanish -----------------------------------------------------------------------------------


def test_vms_destroyed_while_the_daemon_acts_on_them(rig: Rig, make_guests: Any, tmp_path: Path) -> None:
    doomed = make_guests(2)
    (keeper,) = make_guests(1)
    with running_daemon(tmp_path, [*doomed, keeper]) as daemon:
        # The first shrinks are being applied now: destroy the doomed ones in the middle of the ticks.
        wait_for(lambda: "action" in daemon.kinds(), bool, 60, "first actions")
        for i, guest in enumerate(doomed):
            time.sleep(0.37 * (i + 1))
            rig.destroy(guest)
        time.sleep(3 * INTERVAL_S)
        assert daemon.alive(), daemon.log.read_text()
        assert set(daemon.vms()) == {keeper.name}
        wait_shrunk(rig, daemon, [keeper], "the remaining guest ballooned")
        daemon.stop()
    assert "Traceback" not in daemon.log.read_text()
    assert keeper.control.oomkills() == 0


def test_a_qemu_process_killed(rig: Rig, make_guests: Any, tmp_path: Path) -> None:
    victim, survivor = make_guests(2)
    with running_daemon(tmp_path, [victim, survivor]) as daemon:
        pid = int(Path(f"/run/libvirt/qemu/{victim.name}.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: set(daemon.vms()), lambda names: victim.name not in names, 30, "the dead VM gone")
        assert daemon.alive(), daemon.log.read_text()
        wait_shrunk(rig, daemon, [survivor], "the surviving guest ballooned")
        daemon.stop()
    assert "Traceback" not in daemon.log.read_text()
    assert survivor.control.oomkills() == 0


# --- VMs that must be held -----------------------------------------------------------------------------


def test_a_paused_guest_is_held_then_ballooned_when_resumed(
    rig: Rig, make_guests: Any, tmp_path: Path
) -> None:
    paused, other = make_guests(2)
    dom = rig.connection().lookupByName(paused.name)
    dom.suspend()
    try:
        with running_daemon(tmp_path, [paused, other]) as daemon:
            wait_shrunk(rig, daemon, [other], "the running guest ballooned")
            assert balloon(rig, paused) == GUEST_MIB * MiB
            assert_held(rig, daemon, paused, "paused by the user")
            dom.resume()
            wait_shrunk(rig, daemon, [paused], "the resumed guest ballooned")
            daemon.stop()
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.resume()
    assert paused.control.oomkills() == 0


def test_stats_period_set_to_zero_mid_run(rig: Rig, make_guests: Any, tmp_path: Path) -> None:
    (guest,) = make_guests(1)
    dom = rig.connection().lookupByName(guest.name)
    with running_daemon(tmp_path, [guest]) as daemon:
        wait_for(lambda: daemon.status(guest), lambda s: s == "managed", 30, "managed")
        dom.setMemoryStatsPeriod(0, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait_for(lambda: daemon.status(guest), lambda s: s == "no-stats", 3 * STATS_STALE_S + 10, "held")
        assert_held(rig, daemon, guest, "stale", "stats period disabled")
        dom.setMemoryStatsPeriod(1, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait_for(lambda: daemon.status(guest), lambda s: s == "managed", 30, "managed again")
        wait_shrunk(rig, daemon, [guest], "ballooned again with stats back")
        daemon.stop()
    assert guest.control.oomkills() == 0


class _Fifo:
    """A named pipe with its read end open (so a writer's open does not block), read only when asked."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o666)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._reader: threading.Thread | None = None

    def drain(self) -> None:
        """Read everything until the writer closes, in a thread: an aborted job's writer is blocked on
        the full pipe and only sees the abort once it can write again."""
        if self._reader is not None:
            return
        os.set_blocking(self.fd, True)

        def read_all() -> None:
            with contextlib.suppress(OSError):
                while os.read(self.fd, 1 << 20):
                    pass

        self._reader = threading.Thread(target=read_all, daemon=True)
        self._reader.start()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.join(30)
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def test_a_vm_with_a_libvirt_job_in_progress_is_held(rig: Rig, make_guests: Any, tmp_path: Path) -> None:
    busy, other = make_guests(2)
    dom = rig.connection().lookupByName(busy.name)
    fifo = _Fifo(Path("/var/tmp") / f"{busy.name}.dump")  # where QEMU (libvirt-qemu) may write
    job_conn = libvirt.open(URI)  # the dump call blocks: it gets a connection and a thread of its own
    failure: list[BaseException] = []

    def dump() -> None:
        try:
            job_conn.lookupByName(busy.name).coreDumpWithFormat(
                str(fifo.path), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW, libvirt.VIR_DUMP_LIVE
            )
        except libvirt.libvirtError as exc:  # aborted by the test, as intended
            failure.append(exc)

    worker = threading.Thread(target=dump, daemon=True)
    worker.start()
    try:
        wait_for(lambda: dom.jobStats(0).get("type"), lambda t: t != libvirt.VIR_DOMAIN_JOB_NONE, 30, "a job")
        with running_daemon(tmp_path, [busy, other]) as daemon:
            wait_shrunk(rig, daemon, [other], "the other guest ballooned")
            assert dom.jobStats(0)["type"] != libvirt.VIR_DOMAIN_JOB_NONE, "the job ended by itself"
            assert balloon(rig, busy) == GUEST_MIB * MiB
            assert_held(rig, daemon, busy, "held until it ends")
            dom.abortJob()
            fifo.drain()
            worker.join(30)
            wait_shrunk(rig, daemon, [busy], "ballooned once the job ended")
            daemon.stop()
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.abortJob()
        fifo.drain()
        worker.join(30)
        fifo.close()
        job_conn.close()
    assert not worker.is_alive()
    assert busy.control.oomkills() == 0


# --- the journal's disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for one test, unmounted and removed even on failure."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        rig_unavailable(f"cannot mount a tmpfs for the journal: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def _fill(directory: Path, leave: int) -> Path:
    """A file that takes all but ``leave`` bytes of the file system."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with filler.open("wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_the_journal_disk_fills_up(rig: Rig, make_guests: Any, tmp_path: Path) -> None:
    guests = make_guests(2)
    with small_tmpfs(tmp_path / "journalfs", "64k") as fs:
        journal = fs / "journal.jsonl"
        filler = _fill(fs, leave=4096)  # one page: room for a dozen lines, the last one cut short
        with running_daemon(tmp_path, guests, journal=journal) as daemon:
            wait_for(lambda: "cannot be written" in daemon.log.read_text(), bool, 60, "the journal filled up")
            full_size = journal.stat().st_size
            wait_shrunk(rig, daemon, guests, "ballooning went on with the journal full")
            assert daemon.alive() and journal.stat().st_size == full_size
            assert all(isinstance(e, dict) for e in read_journal(journal))  # whole lines only
            filler.unlink()  # room again: the next line (the daemon's stop) says what was lost first
            daemon.stop()
        kinds = [e["kind"] for e in read_journal(journal)]
        assert kinds[-2:] == ["journal-error", "stop"], kinds[-5:]
        assert daemon.log.read_text().count("cannot be written") == 1
        assert stat.S_ISREG(journal.stat().st_mode)
    assert {g.name: g.control.oomkills() for g in guests} == {g.name: 0 for g in guests}
