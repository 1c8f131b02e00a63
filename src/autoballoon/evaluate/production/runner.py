"""Play a production scenario: per policy and repetition, fresh Debian guests, aged, then served and measured.

One run, in order:

1. boot the scenario's production-like guests (all at once) and wait until PostgreSQL and nginx answer;
2. **age** them as hours of service would have: the agent's hog touches all but ``AGE_HEADROOM`` of
   each guest's available memory and frees it (so QEMU's RSS stands near ``<memory>``, as on a host whose
   guests are hours old), then each guest reads its role's data set into its page cache;
3. start the daemon with the policy (``autoballoon run --policy P``, only these guests, the scenario's
   budget), and for ``duration`` seconds play every guest's application and sample every guest, its
   balloon and its QEMU process every ``SAMPLE_S``;
4. stop the daemon (SIGTERM, by PID), read its journal, remove the guests.

Runs go one after another, never side by side: the applications' speed is the measure, and two runs on
two CPUs would slow each other. Each repetition plays the policies in a rotated order, so that a slow
spell of the host does not always fall on the same policy. ``fpr-only`` is no daemon policy: it is the
static policy on guests booted with free page reporting, what a host gets from the guests alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoballoon.evaluate.production.scenario import WINDOWED, ProdGuest, ProdScenario
from autoballoon.evaluate.production.trace import (
    SAMPLE_FIELDS,
    AppRun,
    ProdGuestTrace,
    ProdTrace,
    prod_trace_from_json,
    trace_filename,
    write_prod_trace,
)
from autoballoon.evaluate.real.harness import (
    daemon_argv,
    daemon_config,
    libvirt_balloon,
    qemu_rss,
    stop_daemon,
)
from autoballoon.evaluate.real.trace import journal_actions, read_json, targets_at
from autoballoon.policy import POLICIES
from autoballoon.rig import accel
from autoballoon.rig.control import GuestCommandError, GuestControl
from autoballoon.rig.domains import Guest, GuestSpec
from autoballoon.rig.errors import RigError
from autoballoon.rig.session import RigSession
from autoballoon.units import MiB

FPR_ONLY = "fpr-only"
#: What a production run can play, in report order: the daemon's policies, and ``fpr-only`` (the daemon's
#: static policy on guests with free page reporting).
PLAYED: tuple[str, ...] = (*POLICIES, FPR_ONLY)
SAMPLE_S = 1.0
#: What the aging hog leaves available while it touches a guest's memory: enough that the guest's own
#: services are not OOM-killed, little enough that nearly every page has been touched once.
AGE_HEADROOM = 64 * MiB
AGE_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 300.0
APP_POLL_S = 0.5
#: A driver that has not answered this long after its run should have ended is taken for stuck.
APP_GRACE_S = 120.0
SAMPLE_TIMEOUT_S = 5.0
GUEST_VCPUS = 1


def guest_spec(g: ProdGuest, policy: str) -> GuestSpec:
    return GuestSpec(memory_bytes=g.memory, kind="debian", free_page_reporting=policy == FPR_ONLY,
                     vcpus=GUEST_VCPUS, max_vcpus=GUEST_VCPUS)  # fmt: skip


def run_app(control: GuestControl, args: Sequence[str], timeout_s: float) -> dict[str, str]:
    """Run the guest's application driver with ``args`` and wait for its result."""
    control.app_start(*args)
    deadline = time.monotonic() + timeout_s
    while (result := control.app_result()) is None:
        if time.monotonic() > deadline:
            raise RigError(
                f"guest {control.name}: ab-app {' '.join(args)} gave no result in {timeout_s:.0f} s"
            )
        time.sleep(APP_POLL_S)
    return result


def wait_ready(guest: Guest) -> None:
    """Wait until the guest's services answer (systemd starts them after the agent)."""
    run_app(guest.control, ("ready",), READY_TIMEOUT_S)


def age(guest: Guest, app: str) -> None:
    """Touch nearly all of the guest's memory once, give it back, then read the role's data set."""
    control = guest.control
    touch = max(0, control.sample().mem_available - AGE_HEADROOM)
    control.grow(touch)
    deadline = time.monotonic() + AGE_TIMEOUT_S
    while (s := control.sample()).held < s.hog_target:
        if not s.hog_alive or time.monotonic() > deadline:
            raise RigError(
                f"guest {guest.name}: aging could not touch {touch // MiB} MiB (holds {s.held // MiB})"
            )
        time.sleep(APP_POLL_S)
    control.free_all()
    run_app(control, ("age", app), AGE_TIMEOUT_S)


def _parallel(work: Sequence[Callable[[], None]]) -> None:
    """Run every callable in its own thread; re-raise the first failure once all have ended."""
    failures: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised below, after every thread is joined
            failures.append(exc)

    threads = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in work]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise failures[0]


def _number(result: dict[str, str], key: str) -> float | None:
    try:
        return float(result[key])
    except (KeyError, ValueError):
        return None


@dataclass
class GuestRun:
    """One guest's part of a run: its application's schedule and results, and its samples."""

    spec: ProdGuest
    guest: Guest
    dom: Any
    window_s: float
    apps: list[AppRun] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in SAMPLE_FIELDS})

    def serve(self, t0: float, duration_s: float) -> None:
        """Play the role until the run's end: measurement windows back to back, or the batch schedule."""
        role = self.spec.app
        if role == "idle":
            return
        next_start = 0.0
        while True:
            now = time.monotonic() - t0
            if role in WINDOWED:
                length = min(self.window_s, duration_s - now)
                if length < self.window_s / 2:
                    return
                args: tuple[str, ...] = (role, str(round(length)))
                timeout = length + APP_GRACE_S
            else:
                if now < next_start:
                    time.sleep(min(next_start - now, duration_s - now))
                    if time.monotonic() - t0 >= duration_s:
                        return
                    continue
                if now >= duration_s:
                    return
                args, timeout = (role,), duration_s + APP_GRACE_S
                assert self.spec.every_s is not None
                next_start += self.spec.every_s
            started = time.monotonic() - t0
            try:
                result = run_app(self.guest.control, args, timeout)
            except GuestCommandError as exc:  # the application failed: a harm to report, not a crash
                finished = time.monotonic() - t0
                self.apps.append(AppRun(round(started, 3), round(finished, 3), finished - started,
                                        error=str(exc)))  # fmt: skip
                continue
            finished = time.monotonic() - t0
            self.apps.append(AppRun(round(started, 3), round(finished, 3), _number(result, "wall_s") or 0.0,
                                    _number(result, "rate"), _number(result, "p99_ms")))  # fmt: skip

    def sample(self, t: float) -> None:
        row: dict[str, Any] = dict.fromkeys(SAMPLE_FIELDS)
        lv = libvirt_balloon(self.dom)
        row.update(t=round(t, 3), actual=lv["actual"], libvirt_last_update=lv["last_update"],
                   qemu_rss=qemu_rss(self.guest.name))  # fmt: skip
        with contextlib.suppress(RigError):
            s = self.guest.control.sample(timeout=SAMPLE_TIMEOUT_S)
            row.update(guest_mem_total=s.mem_total, guest_mem_available=s.mem_available,
                       guest_cached=s.cached, oom_kill=s.oom_kill, pswpin=s.pswpin,
                       pgmajfault=s.pgmajfault, refault_anon=s.refault_anon, refault_file=s.refault_file,
                       pgsteal=s.pgsteal, pgscan=s.pgscan, psi_some_us=s.psi_some_us,
                       psi_full_us=s.psi_full_us)  # fmt: skip
        for key in SAMPLE_FIELDS:
            if key != "target":
                self.columns[key].append(row[key])

    def sample_until(self, t0: float, duration_s: float) -> None:
        tick = 0
        while (t := time.monotonic() - t0) < duration_s:
            self.sample(t)
            tick += 1
            time.sleep(max(0.0, t0 + tick * SAMPLE_S - time.monotonic()))

    def trace(self, policy: str, actions: Sequence[Any]) -> ProdGuestTrace:
        self.columns["target"] = targets_at(self.columns["t"], actions, self.guest.name, self.spec.memory)
        return ProdGuestTrace(self.spec.name, self.guest.name, self.spec.memory, self.spec.app,
                              policy == FPR_ONLY, tuple(self.apps), dict(self.columns))  # fmt: skip


def run_once(
    scenario: ProdScenario,
    policy: str,
    repetition: int,
    rig: RigSession,
    work: Path,
    progress: Callable[[str], None],
) -> ProdTrace:
    """One policy, one repetition, on fresh guests that are removed at the end whatever happens."""
    label = f"{scenario.name}/{policy}#{repetition}"
    booted = time.monotonic()
    guests = rig.boot([guest_spec(g, policy) for g in scenario.guests])
    try:
        _parallel([functools.partial(wait_ready, g) for g in guests])
        progress(f"{label}: {len(guests)} guests up in {time.monotonic() - booted:.0f} s; aging them")
        aging = time.monotonic()
        _parallel([functools.partial(age, g, s.app) for g, s in zip(guests, scenario.guests, strict=True)])
        aging_s = time.monotonic() - aging
        progress(f"{label}: aged in {aging_s:.0f} s; the daemon starts")
        return _serve(scenario, policy, repetition, guests, rig, work, aging_s)
    finally:
        for guest in guests:
            with contextlib.suppress(Exception):
                rig.destroy(guest)


def _serve(
    scenario: ProdScenario,
    policy: str,
    repetition: int,
    guests: Sequence[Guest],
    rig: RigSession,
    work: Path,
    aging_s: float,
) -> ProdTrace:
    work.mkdir(parents=True, exist_ok=True)
    journal, config, log_path = work / "journal.jsonl", work / "autoballoon.toml", work / "daemon.log"
    config.write_text(daemon_config([g.name for g in guests], scenario.budget, journal))
    argv = daemon_argv("static" if policy == FPR_ONLY else policy, config)
    conn = rig.connection()
    runs = [GuestRun(s, g, conn.lookupByName(g.name), scenario.window_s)
            for s, g in zip(scenario.guests, guests, strict=True)]  # fmt: skip
    load_before = os.getloadavg()[0]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        started_wall, t0 = time.time(), time.monotonic()
        try:
            _parallel([functools.partial(r.sample_until, t0, scenario.duration_s) for r in runs]
                      + [functools.partial(r.serve, t0, scenario.duration_s) for r in runs])  # fmt: skip
        finally:
            code = stop_daemon(proc)
    if code not in (0, -15):
        raise RigError(f"{scenario.name}/{policy}: the daemon exited {code}:\n"
                       + log_path.read_text(errors="replace")[-1500:])  # fmt: skip
    actions = journal_actions(journal, started_wall)
    return ProdTrace(
        scenario=scenario.name, source=scenario.source, policy=policy, repetition=repetition,
        budget=scenario.budget, duration_s=scenario.duration_s, window_s=scenario.window_s,
        started_wall=round(started_wall, 3), daemon_command=" ".join(["autoballoon", *argv[3:]]),
        accel=accel.choose().accel, aging_s=round(aging_s, 1),
        guests=tuple(r.trace(policy, actions) for r in runs), actions=actions,
        host_load=(round(load_before, 2), round(os.getloadavg()[0], 2)),
    )  # fmt: skip


def schedule(scenario: ProdScenario, policies: Sequence[str]) -> list[tuple[int, str]]:
    """(repetition, policy) in play order: each repetition rotates the policies by one."""
    n = len(policies)
    return [(r, policies[(r + i) % n]) for r in range(1, scenario.repetitions + 1) for i in range(n)]


def run_scenario(
    scenario: ProdScenario,
    policies: Sequence[str],
    rig: RigSession,
    work: Path,
    record: Path | None,
    progress: Callable[[str], None],
) -> list[ProdTrace]:
    """Every (repetition, policy) of the scenario. A run whose trace is already in ``record`` is read back,
    not played again: an interrupted benchmark goes on where it stopped."""
    traces: list[ProdTrace] = []
    for repetition, policy in schedule(scenario, policies):
        done = record / f"{scenario.name}--{policy}--{repetition}.json.gz" if record else None
        if done is not None and done.exists():
            traces.append(prod_trace_from_json(read_json(done, "production trace")))
            progress(f"{scenario.name}/{policy}#{repetition}: recorded already ({done})")
            continue
        started = time.monotonic()
        trace = run_once(scenario, policy, repetition, rig, work / f"{policy}-{repetition}", progress)
        if record is not None:
            write_prod_trace(trace, record)
            assert done is not None and done.name == trace_filename(trace)
        progress(f"{scenario.name}/{policy}#{repetition}: done in {time.monotonic() - started:.0f} s")
        traces.append(trace)
    return traces
