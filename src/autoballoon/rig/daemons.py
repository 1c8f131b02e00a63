"""Start libvirtd and virtlogd when nothing runs them, and remember exactly which PIDs the rig started.

Containers and CI runners have no init system, so the rig starts the daemons itself (``-d``). The PIDs it
started are written to a state file under /run so that whoever started them (a test session, a benchmark,
``python -m autoballoon.rig stop``) can stop those and only those; a daemon someone else runs (systemd,
another user of the host) is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from autoballoon.rig.errors import RigError

STATE_FILE = Path(os.environ.get("AUTOBALLOON_RIG_STATE", "/run/autoballoon-rig/daemons.json"))


@dataclass(frozen=True, slots=True)
class Daemon:
    name: str
    socket: Path
    pid_file: Path


LIBVIRTD = Daemon("libvirtd", Path("/run/libvirt/libvirt-sock"), Path("/run/libvirtd.pid"))
VIRTLOGD = Daemon("virtlogd", Path("/run/libvirt/virtlogd-sock"), Path("/run/virtlogd.pid"))
#: virtlogd first: libvirtd hands QEMU's console log to it when a domain starts.
DAEMONS = (VIRTLOGD, LIBVIRTD)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.1


def _answers(path: Path) -> bool:
    """Whether a daemon accepts connections on its unix socket (a stale socket file does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _pid_alive(pid: int, name: str) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == name


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def load_started() -> dict[str, int]:
    """PIDs the rig started that are still alive, by daemon name."""
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {name: pid for name, pid in data.items() if isinstance(pid, int) and _pid_alive(pid, name)}


def _save_started(started: dict[str, int]) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(started))
    tmp.replace(STATE_FILE)


def _start(daemon: Daemon) -> int:
    binary = shutil.which(daemon.name) or f"/usr/sbin/{daemon.name}"
    if not Path(binary).exists():
        raise RigError(f"{daemon.name} is not installed; run scripts/setup-rig (libvirt-daemon-system)")
    with contextlib.suppress(FileNotFoundError):
        daemon.pid_file.unlink()
    done = subprocess.run([binary, "-d"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RigError(f"{binary} -d failed ({done.returncode}): {done.stderr.strip()}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = _read_pid(daemon.pid_file)
        if pid is not None and _answers(daemon.socket):
            return pid
        time.sleep(POLL_S)
    raise RigError(f"{daemon.name} started but {daemon.socket} did not answer within {START_TIMEOUT_S:.0f} s")


def ensure_daemons() -> dict[str, int]:
    """Make libvirtd and virtlogd answer; returns the PIDs this rig started (now or in an earlier run)."""
    if os.geteuid() != 0:
        raise RigError("the real-VM rig needs root (qemu:///system, libvirtd)")
    started = load_started()
    for daemon in DAEMONS:
        if _answers(daemon.socket):
            continue
        started[daemon.name] = _start(daemon)
    _save_started(started)
    return started


def _stop_pid(pid: int, name: str) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid_alive(pid, name):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_S)


def stop_started(only: Mapping[str, int] | None = None) -> list[str]:
    """Stop the daemons the rig started (libvirtd first), and nothing else. Returns what it stopped.

    ``only`` limits it to those PIDs (what one session started), so that a session never stops daemons
    another one started and still uses.
    """
    started = load_started()
    stopped = []
    for daemon in reversed(DAEMONS):
        pid = started.get(daemon.name)
        if pid is not None and (only is None or only.get(daemon.name) == pid):
            del started[daemon.name]
            _stop_pid(pid, daemon.name)
            stopped.append(f"{daemon.name}[{pid}]")
    _save_started(started)
    return stopped


def still_running(pids: Mapping[str, int]) -> list[str]:
    """Which of these daemons (name -> PID) are still alive, as ``name[pid]``."""
    return [f"{name}[{pid}]" for name, pid in pids.items() if _pid_alive(pid, name)]


def libvirtd_restartable() -> str | None:
    """None if the rig may restart libvirtd (it started it), else the reason it may not."""
    if "libvirtd" in load_started():
        return None
    return "libvirtd on this host was not started by the test rig, so the rig will not restart it"


def stop_libvirtd() -> None:
    """Stop the libvirtd the rig started (by its PID); guests keep running without it."""
    reason = libvirtd_restartable()
    if reason is not None:
        raise RigError(reason)
    started = load_started()
    _stop_pid(started.pop("libvirtd"), LIBVIRTD.name)
    _save_started(started)


def start_libvirtd() -> int:
    """Start libvirtd again (after :func:`stop_libvirtd`) and record its PID."""
    started = load_started()
    started["libvirtd"] = _start(LIBVIRTD)
    _save_started(started)
    return started["libvirtd"]


def restart_libvirtd(down_s: float = 0.0) -> int:
    """Stop the libvirtd the rig started (by its PID), stay down ``down_s``, start it again; new PID."""
    stop_libvirtd()
    time.sleep(down_s)
    return start_libvirtd()
