"""Play a real scenario against each policy: fresh guests, the daemon as a user runs it, a raw trace.

For one scenario, every policy gets its own fresh set of the scenario's guests; all of them boot at once.
Each policy's run then starts its own ``autoballoon --connect qemu:///system run --policy P --config CFG
--no-http`` subprocess (``manage`` = its guests, the scenario's ``[host] budget``, a journal), plays each
guest's workload over the rig's control channel at its second, samples every guest about every
``SAMPLE_S``, and at the end stops the daemon (SIGTERM, by PID) and reads its journal. The runs of one
scenario go side by side, each started ``STAGGER_S`` after the previous so that their sudden allocations
do not land on the two host CPUs at the same instant; their budgets are fixed, so they share nothing but
CPU time. Every guest is removed at the end, even when a run fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from autoballoon.evaluate.real.scenario import Command, RealGuest, RealScenario
from autoballoon.evaluate.real.trace import (
    SAMPLE_FIELDS,
    CommandRecord,
    GuestTrace,
    JournalAction,
    Outcome,
    RunTrace,
    journal_actions,
    targets_at,
)
from autoballoon.rig import accel
from autoballoon.rig.control import GuestSample
from autoballoon.rig.domains import STATS_PERIOD_S, URI, Guest, GuestSpec
from autoballoon.rig.errors import RigError
from autoballoon.rig.session import RigSession
from autoballoon.units import KiB, MiB, format_size

SAMPLE_S = 0.5
STAGGER_S = 2.5
#: A sample request that takes longer than this is recorded as missing (a guest deep in reclaim).
SAMPLE_TIMEOUT_S = 5.0
DAEMON_STOP_S = 30.0
QEMU_PID_DIR = Path("/run/libvirt/qemu")


def daemon_argv(policy: str, config: Path) -> list[str]:
    """The daemon's command line: what a user types, through this Python's ``autoballoon``."""
    return [sys.executable, "-m", "autoballoon", "--connect", URI, "run", "--policy", policy, "--config",
            str(config), "--no-http"]  # fmt: skip


#: The daemon's hot-host pause (no shrinking while the host's load average is above twice its CPUs) is
#: turned off: on a shared benchmark host the load comes mostly from outside the runs, and the reference
#: policies have no such pause, so it would make the comparison measure the neighbours instead.
NO_HOST_LOAD_PAUSE = 1000.0
#: Every guest's floor (per-VM policy ``min``): the daemon's own global minimum. Proxmox balloons only
#: the guests that have a configured minimum, so without one it would never move.
GUEST_MIN = 128 * MiB


def daemon_config(domains: Sequence[str], budget: int, journal: Path) -> str:
    """The daemon's config file: only these guests, the scenario's budget, a journal, a floor for every
    guest, no hot-host pause."""
    names = ", ".join(f'"{d}"' for d in domains)
    return (
        f'journal = "{journal}"\nstate = "{journal.with_suffix(".state.json")}"\n'
        f'manage = [{names}]\n\n[host]\nbudget = "{format_size(budget)}"\n\n'
        f'[defaults]\nmin = "{format_size(GUEST_MIN)}"\n\n'
        f"[health]\nhost_load_factor = {NO_HOST_LOAD_PAUSE:g}\n"
    )


def qemu_rss(domain: str) -> int | None:
    """The QEMU process's resident memory (bytes), from libvirt's pid file and /proc; None if gone."""
    try:
        pid = int((QEMU_PID_DIR / f"{domain}.pid").read_text().strip())
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
    except (OSError, ValueError):
        return None
    return None


def libvirt_balloon(dom: Any) -> dict[str, int | None]:
    """libvirt's balloon figures for one domain, in bytes (``last_update``: Unix time), None if absent."""
    try:
        stats = dom.memoryStats()
    except libvirt.libvirtError:
        return {"actual": None, "total": None, "available": None, "free": None, "last_update": None}

    def kib(key: str) -> int | None:
        return int(stats[key]) * KiB if key in stats else None

    return {
        "actual": kib("actual"),
        "total": kib("available"),  # libvirt's 'available' is the guest's MemTotal
        "available": kib("usable"),  # 'usable' is its MemAvailable
        "free": kib("unused"),
        "last_update": int(stats["last_update"]) if stats.get("last_update") else None,
    }


@dataclass
class _CommandState:
    command: Command
    started_s: float | None = None
    finished_s: float | None = None
    outcome: Outcome = "unfinished"
    kills_before: int | None = None

    def record(self) -> CommandRecord:
        return CommandRecord(
            self.command.at_s, self.command.text, self.started_s, self.finished_s, self.outcome
        )


@dataclass
class GuestPlayer:
    """Plays one guest's workload and samples it; used by one thread only."""

    spec: RealGuest
    guest: Guest
    dom: Any
    commands: list[_CommandState] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in SAMPLE_FIELDS})

    def __post_init__(self) -> None:
        self.commands = [_CommandState(c) for c in self.spec.workload]

    def _send(self, command: Command) -> None:
        if command.kind == "free":
            self.guest.control.shrink(command.size)
        else:
            assert command.size is not None
            self.guest.control.grow(command.size, command.rate)

    def play_due(self, t: float, kills: int | None) -> None:
        """Send every command whose second has come (in order)."""
        for state in self.commands:
            if state.started_s is None and state.command.at_s <= t:
                state.started_s = round(t, 3)
                state.kills_before = kills
                self._send(state.command)

    def _settle(self, t: float, s: GuestSample) -> None:
        """Mark the running commands finished (the workload holds its goal) or killed (an OOM kill)."""
        for state in self.commands:
            if state.started_s is None or state.outcome != "unfinished":
                continue
            if state.kills_before is not None and s.oom_kill > state.kills_before:
                state.outcome, state.finished_s = "killed", round(t, 3)
            elif s.held == s.hog_target and state is self._latest_started():
                state.outcome, state.finished_s = "done", round(t, 3)

    def _latest_started(self) -> _CommandState | None:
        started = [c for c in self.commands if c.started_s is not None]
        return started[-1] if started else None

    def sample(self, t: float) -> None:
        try:
            s: GuestSample | None = self.guest.control.sample(timeout=SAMPLE_TIMEOUT_S)
        except RigError:
            s = None
        lv = libvirt_balloon(self.dom)
        row: dict[str, Any] = dict.fromkeys(SAMPLE_FIELDS)
        row.update(
            t=round(t, 3),
            actual=lv["actual"],
            libvirt_total=lv["total"],
            libvirt_available=lv["available"],
            libvirt_free=lv["free"],
            libvirt_last_update=lv["last_update"],
            qemu_rss=qemu_rss(self.guest.name),
        )
        if s is not None:
            row.update(
                guest_mem_total=s.mem_total,
                guest_mem_available=s.mem_available,
                guest_mem_free=s.mem_free,
                guest_anon=s.anon,
                guest_cached=s.cached,
                guest_shmem=s.shmem,
                guest_swap_total=s.swap_total,
                guest_swap_free=s.swap_free,
                oom_kill=s.oom_kill,
                pswpin=s.pswpin,
                pswpout=s.pswpout,
                pgmajfault=s.pgmajfault,
                psi_some_us=s.psi_some_us,
                psi_full_us=s.psi_full_us,
                held=s.held,
            )
            self._settle(t, s)
        for key in SAMPLE_FIELDS:
            if key != "target":
                self.columns[key].append(row[key])

    def last_kills(self) -> int | None:
        kills = [k for k in self.columns["oom_kill"] if k is not None]
        return kills[-1] if kills else None

    def trace(self, actions: Sequence[JournalAction]) -> GuestTrace:
        self.columns["target"] = targets_at(self.columns["t"], actions, self.guest.name, self.spec.memory)
        return GuestTrace(
            name=self.spec.name,
            domain=self.guest.name,
            memory=self.spec.memory,
            autodeflate=self.spec.autodeflate,
            swap=self.spec.swap,
            stats_period_s=STATS_PERIOD_S,
            commands=tuple(c.record() for c in self.commands),
            samples={k: self.columns[k] for k in SAMPLE_FIELDS},
        )


def _play(player: GuestPlayer, t0: float, duration_s: float, failures: list[BaseException]) -> None:
    """One guest's loop: due commands, then a sample, every SAMPLE_S until the run's end."""
    try:
        tick = 0
        while (t := time.monotonic() - t0) < duration_s:
            player.play_due(t, player.last_kills())
            player.sample(t)
            tick += 1
            time.sleep(max(0.0, t0 + tick * SAMPLE_S - time.monotonic()))
    except BaseException as exc:  # reported by the run, after every thread is joined
        failures.append(exc)


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM the daemon we started (by its PID), wait, SIGKILL if it does not stop; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(DAEMON_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run_policy(
    scenario: RealScenario, policy: str, guests: Sequence[Guest], conn: Any, work: Path, delay_s: float = 0.0
) -> RunTrace:
    """One policy on its own fresh guests (booted already, in scenario order): daemon, workload, trace."""
    time.sleep(delay_s)
    work.mkdir(parents=True, exist_ok=True)
    journal, config, log_path = work / "journal.jsonl", work / "autoballoon.toml", work / "daemon.log"
    config.write_text(daemon_config([g.name for g in guests], scenario.budget, journal))
    argv = daemon_argv(policy, config)
    players = [
        GuestPlayer(spec, g, conn.lookupByName(g.name))
        for spec, g in zip(scenario.guests, guests, strict=True)
    ]
    failures: list[BaseException] = []
    load_before = os.getloadavg()[0]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        started_wall, t0 = time.time(), time.monotonic()
        try:
            threads = [
                threading.Thread(target=_play, args=(p, t0, scenario.duration_s, failures), daemon=True)
                for p in players
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            code = stop_daemon(proc)
    if failures:
        raise RigError(f"{scenario.name}/{policy}: playing the workload failed: {failures[0]!r}")
    if code not in (0, -signal.SIGTERM):
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RigError(f"{scenario.name}/{policy}: the daemon exited {code}:\n{tail}")
    actions = journal_actions(journal, started_wall)
    return RunTrace(
        scenario=scenario.name,
        source=scenario.source,
        policy=policy,
        budget=scenario.budget,
        duration_s=scenario.duration_s,
        started_wall=round(started_wall, 3),
        daemon_command=" ".join(["autoballoon", *argv[3:]]),
        guests=tuple(p.trace(actions) for p in players),
        actions=actions,
        host_load=(round(load_before, 2), round(os.getloadavg()[0], 2)),
        accel=accel.choose().accel,
    )


def guest_spec(g: RealGuest) -> GuestSpec:
    return GuestSpec(memory_bytes=g.memory, autodeflate=g.autodeflate, swap_bytes=g.swap)


def run_scenario(
    scenario: RealScenario,
    policies: Sequence[str],
    rig: RigSession,
    work: Path,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[RunTrace]:
    """Every policy on the scenario, each on fresh guests, side by side; every guest removed at the end."""
    n = len(scenario.guests)
    booted_at = time.monotonic()
    guests = rig.boot([guest_spec(g) for _ in policies for g in scenario.guests])
    progress(f"{scenario.name}: {len(guests)} guests booted in {time.monotonic() - booted_at:.1f} s")
    conn = rig.connection()
    results: dict[str, RunTrace] = {}
    failures: list[BaseException] = []

    def one(i: int, policy: str) -> None:
        try:
            mine = guests[i * n : (i + 1) * n]
            results[policy] = run_policy(scenario, policy, mine, conn, work / policy, delay_s=i * STAGGER_S)
        except BaseException as exc:
            failures.append(exc)

    try:
        threads = [threading.Thread(target=one, args=(i, p), daemon=True) for i, p in enumerate(policies)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        for guest in guests:
            with contextlib.suppress(Exception):
                rig.destroy(guest)
    if failures:
        raise failures[0]
    return [results[p] for p in policies]
