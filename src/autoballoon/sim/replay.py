"""Replaying real-guest recordings in the simulator, to check its physics against real guests.

A **recording** is one run of real guests (the rig's libvirt/QEMU/Linux guests): for each guest its size,
its balloon settings, the workload it ran (the memory hog's commands) and, sampled over time, the balloon
target the host set, the ``actual`` the driver reached, the guest's own ``/proc/meminfo`` and its
cumulative OOM-kill count. :func:`replay` runs the simulator on the same guests with the workload as
demand and the *recorded target trajectory* (no policy), and :func:`compare` says whether the simulator
predicts the same OOM / no-OOM outcome per guest and how far its ``actual`` strays from the real one.

File format (JSON, ``format`` = :data:`FORMAT`; sizes in bytes, times in seconds from the run's start)::

    {"format": "autoballoon-recording/1", "name": "...", "description": "...",
     "guests": [{"name": "g1", "max_bytes": 536870912, "autodeflate": false, "swap_bytes": 0,
                 "stats_period_s": 1, "workload": [[5.0, "alloc 100M"], [60.0, "ramp 150M 20M/s"],
                                                   [120.0, "free"]],
                 "samples": [{"t": 0.0, "target_bytes": ..., "actual_bytes": ...,
                              "meminfo": {"MemTotal": ..., "MemAvailable": ..., "AnonPages": ...},
                              "oom_kills": 0}, ...]}]}

Workload commands are the rig agent's (``tests/rig/guest/agent.c``): ``alloc SIZE`` (touch SIZE more at
once, as fast as the guest can), ``alloc SIZE RATE/s`` or ``ramp SIZE RATE/s`` (at that rate), ``free
SIZE`` and ``free`` / ``free all``. Sizes follow virsh (``100M``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from autoballoon.errors import InvalidValueError
from autoballoon.sim.demand import Demand, Trace
from autoballoon.sim.engine import Simulation
from autoballoon.sim.physics import DEFAULT_PHYSICS, Physics
from autoballoon.sim.scenario import GuestSpec, HostSpec, RunSpec, Scenario
from autoballoon.units import GiB, MiB, parse_size

FORMAT = "autoballoon-recording/1"
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: How fast the rig's memory hog touches memory when told to allocate "at once": 15-50 MiB/s in the
#: recordings (``AnonPages`` rising; TCG guests on two loaded cores). Used only after a kill, when the
#: hog's own ``held`` no longer says what the workload wants.
RIG_TOUCH_BPS = 20 * MiB
#: The replay's simulation step: finer than the recordings' sampling (twice a second) so that the
#: balloon's latency and speed are not rounded to whole seconds.
REPLAY_STEP_S = 0.25


@dataclass(frozen=True, slots=True)
class RecordedGuest:
    """One real guest of a recording, its workload and its sampled trajectory (arrays by sample)."""

    name: str
    max_bytes: int
    autodeflate: bool
    swap_bytes: int
    stats_period_s: float
    workload: tuple[tuple[float, str], ...]
    times: F64
    target: I64
    actual: I64
    mem_available: I64
    anon: I64
    oom_kills: I64
    #: What the memory hog held at each sample (bytes; -1 where the recording does not say).
    held: I64
    #: Page cache the guest can never drop, at boot (``Cached - Shmem``: its files in use).
    pinned_cache: int
    #: What the guest's kernel holds, where the recording knows it better than :func:`kernel_estimate`
    #: (a run trace, which samples no ``AnonPages``, knows what the hog held at the first sample).
    kernel_bytes: int | None = None
    #: The targets the host set, each at the moment it set it (seconds, bytes), where the recording knows
    #: them (a run trace has the daemon's journal); empty: the sampled ``target`` is applied at each
    #: sample, up to a sampling interval after the host really set it.
    moves: tuple[tuple[float, int], ...] = ()

    @property
    def killed(self) -> bool:
        """Whether the guest's OOM killer fired during the recording."""
        return bool(self.oom_kills[-1] > self.oom_kills[0])


@dataclass(frozen=True, slots=True)
class Recording:
    name: str
    description: str
    source: str
    guests: tuple[RecordedGuest, ...]

    @property
    def duration(self) -> float:
        return float(max(g.times[-1] for g in self.guests))


def load_recording(path: str | Path) -> Recording:
    """Read a recording file; anything malformed is an error naming the file and the field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidValueError("recording file", str(p), f"a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidValueError(
            f"{p}: format", data.get("format") if isinstance(data, dict) else data, FORMAT
        )
    guests = data.get("guests")
    if not isinstance(guests, list) or not guests:
        raise InvalidValueError(f"{p}: guests", guests, "a list of recorded guests")
    return Recording(
        name=str(data.get("name") or p.stem),
        description=str(data.get("description", "")),
        source=str(p),
        guests=tuple(_guest(g, f"{p}: guest #{i + 1}") for i, g in enumerate(guests)),
    )


def _guest(raw: Any, where: str) -> RecordedGuest:
    try:
        samples = raw["samples"]
        times = np.array([s["t"] for s in samples], dtype=np.float64)
        guest = RecordedGuest(
            name=str(raw["name"]),
            max_bytes=int(raw["max_bytes"]),
            autodeflate=bool(raw.get("autodeflate", False)),
            swap_bytes=int(raw.get("swap_bytes", 0)),
            stats_period_s=float(raw.get("stats_period_s", 1.0)),
            workload=tuple((float(t), str(cmd)) for t, cmd in raw.get("workload", [])),
            times=times,
            target=np.array([s["target_bytes"] for s in samples], dtype=np.int64),
            actual=np.array([s["actual_bytes"] for s in samples], dtype=np.int64),
            mem_available=np.array([s["meminfo"]["MemAvailable"] for s in samples], dtype=np.int64),
            anon=np.array([s["meminfo"]["AnonPages"] for s in samples], dtype=np.int64),
            oom_kills=np.array([s["oom_kills"] for s in samples], dtype=np.int64),
            held=np.array(
                [s.get("held_mib", -1) * MiB if "held_mib" in s else -1 for s in samples], dtype=np.int64
            ),
            pinned_cache=max(
                0, int(samples[0]["meminfo"]["Cached"]) - int(samples[0]["meminfo"].get("Shmem", 0))
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidValueError(
            where, repr(exc), "the fields of docs/scenarios.md, 'Replaying real guests'"
        ) from None
    if len(times) < 2 or not np.all(np.diff(times) > 0) or not np.isfinite(times).all():
        raise InvalidValueError(f"{where} samples", len(times), "two or more samples in increasing time")
    return guest


def workload_demand(workload: Sequence[tuple[float, str]], baseline: int, horizon: float) -> Trace:
    """The hog's intended memory over time, plus the guest's own ``baseline`` anonymous memory, as a
    linear trace: what the guest's workload needs whatever the balloon does (before any OOM kill)."""
    times, values = [0.0], [float(baseline)]
    level = float(baseline)
    for at, command in sorted(workload):
        words = command.split()
        if not words:
            continue
        if at > times[-1]:
            times.append(at)
            values.append(level)
        verb, args = words[0], words[1:]
        if verb in ("alloc", "ramp"):
            size = parse_size(args[0], default_unit=MiB, what=f"workload {command!r} size")
            rate = _rate(args[1], command) if len(args) > 1 else RIG_TOUCH_BPS
            level += size
            times.append(times[-1] + size / rate)
            values.append(level)
        elif verb == "free":
            everything = not args or args[0] == "all"
            freed = level - baseline if everything else parse_size(args[0], default_unit=MiB, what=command)
            level = max(float(baseline), level - freed)
            times.append(times[-1] + 1e-3)
            values.append(level)
        else:
            raise InvalidValueError(
                "workload command", command, "alloc SIZE [RATE/s], ramp SIZE RATE/s, free"
            )
    times.append(max(horizon, times[-1] + 1.0))
    values.append(level)
    return Trace(times=tuple(times), values=tuple(round(v) for v in values), source="workload")


def _rate(text: str, command: str) -> float:
    if not text.endswith("/s"):
        raise InvalidValueError("workload rate", command, "a rate like 20M/s")
    rate = float(parse_size(text.removesuffix("/s"), default_unit=MiB, what=f"workload {command!r} rate"))
    if not 0 < rate < math.inf:
        raise InvalidValueError("workload rate", command, "a rate above 0, like 20M/s")
    return rate


def recorded_demand(g: RecordedGuest, horizon: float) -> Trace:
    """The guest's workload as demand: what the hog really held while it lived (its allocation speed on
    a loaded TCG guest is the workload's, not the model's), then, after the first OOM kill, what its
    commands still asked for."""
    baseline = int(g.anon[0])
    commanded = workload_demand(g.workload, baseline, horizon)
    if (g.held < 0).any():
        return commanded
    first_kill = np.flatnonzero(g.oom_kills > g.oom_kills[0])
    alive = len(g.times) if not first_kill.size else int(first_kill[0])
    times = [float(t) for t in g.times[:alive]]
    values = [baseline + int(h) for h in g.held[:alive]]
    if alive < len(g.times):
        after = [(t, v) for t, v in zip(commanded.times, commanded.values, strict=True) if t > times[-1]]
        level = int(np.interp(times[-1], commanded.times, commanded.values))
        times.append(times[-1] + 1e-3)
        values.append(level)
        times += [t for t, _ in after]
        values += [v for _, v in after]
    return Trace(times=tuple(times), values=tuple(values), source="recorded hog")


def kernel_estimate(g: RecordedGuest, physics: Physics) -> int:
    """The guest memory the model counts as kernel: everything the first sample shows in use beyond
    anonymous memory and the page cache it keeps (MemAvailable is what the model's free + cache is)."""
    if g.kernel_bytes is not None:
        return g.kernel_bytes
    return max(0, int(g.actual[0] - g.mem_available[0] - g.anon[0]) - physics.cache_min_bytes)


def replay_physics(rec: Recording, physics: Physics = DEFAULT_PHYSICS) -> Physics:
    """The physics with the recording's own guests' pinned page cache: a property of their userland
    (the rig's guests run from an initramfs and have almost none), not of ballooning."""
    return replace(physics, cache_min_bytes=min(g.pinned_cache for g in rec.guests))


def replay_scenario(rec: Recording, physics: Physics = DEFAULT_PHYSICS) -> Scenario:
    """A scenario of the recording's guests, each with its workload as demand."""
    guests = tuple(
        GuestSpec(
            name=g.name,
            max=g.max_bytes,
            target=int(g.target[0]),
            demand=Demand(recorded_demand(g, rec.duration)),
            autodeflate=g.autodeflate,
            stats_period=g.stats_period_s,
            swap=g.swap_bytes,
            kernel=min(kernel_estimate(g, physics), g.max_bytes - 1),
        )
        for g in rec.guests
    )
    ram = sum(g.max_bytes for g in rec.guests) + 4 * GiB  # the host is not what a replay checks
    return Scenario(
        source=rec.source,
        host=HostSpec(ram=ram, reserve=GiB, base_used=GiB, cpus=2),
        run=RunSpec(duration=math.ceil(rec.duration) + 1.0, step=REPLAY_STEP_S),
        guests=guests,
    )


@dataclass(frozen=True, slots=True)
class Replayed:
    """The simulator's ``actual`` and OOM-kill count at each recorded sample time, per guest."""

    actual: tuple[I64, ...]
    oom_kills: tuple[I64, ...]


def replay(rec: Recording, physics: Physics | None = None) -> Replayed:
    """Run the simulator through the recording, setting each guest's target as the host did: at the
    moments it set them where the recording knows them, else at each sample."""
    physics = physics or replay_physics(rec)
    sim = Simulation(replay_scenario(rec, physics), physics=physics)
    moments = sorted(
        {float(t) for g in rec.guests for t in g.times} | {t for g in rec.guests for t, _ in g.moves}
    )
    actual = [np.zeros(len(g.times), dtype=np.int64) for g in rec.guests]
    kills = [np.zeros(len(g.times), dtype=np.int64) for g in rec.guests]
    cursor = [0] * len(rec.guests)
    moved = [0] * len(rec.guests)
    for t in moments:
        sim.step(max(0.0, t - sim.time))
        for i, g in enumerate(rec.guests):
            k = cursor[i]
            if k < len(g.times) and g.times[k] <= t + 1e-9:
                actual[i][k] = sim.actual[i]
                kills[i][k] = sim.oom_kills[i]
                if not g.moves:
                    sim.set_target(i, min(int(g.target[k]), g.max_bytes))
                cursor[i] = k + 1
            while moved[i] < len(g.moves) and g.moves[moved[i]][0] <= t + 1e-9:
                sim.set_target(i, min(g.moves[moved[i]][1], g.max_bytes))
                moved[i] += 1
    return Replayed(actual=tuple(actual), oom_kills=tuple(kills))


#: How much timing a replay may get wrong: the rig's balloon moved at 50-155 MiB/s and answered a new
#: target in 0.1-1.2 s, varying with the load of its two shared cores, so the shape of a move is
#: compared, not the instant it lands.
TIMING_SLACK_S = 2.0


@dataclass(frozen=True, slots=True)
class GuestComparison:
    recording: str
    guest: str
    real_killed: bool
    sim_killed: bool
    #: The worst distance, in bytes, between the real ``actual`` at a sample and the simulated ``actual``
    #: anywhere within :data:`TIMING_SLACK_S` of it (0 when the simulator passed through the real value).
    max_error: int
    #: The 95th percentile of the plain |simulated - real| ``actual`` at the same instant, bytes.
    p95_error: int

    @property
    def same_outcome(self) -> bool:
        return self.real_killed == self.sim_killed


def compare(rec: Recording, result: Replayed) -> list[GuestComparison]:
    """Per guest: the OOM outcomes, and how far the simulated ``actual`` strays from the real one."""
    out = []
    for g, actual, kills in zip(rec.guests, result.actual, result.oom_kills, strict=True):
        slack = np.zeros(len(g.times), dtype=np.int64)
        for k, t in enumerate(g.times):
            near = actual[np.abs(g.times - t) <= TIMING_SLACK_S]
            low, high = int(near.min()), int(near.max())
            slack[k] = max(low - int(g.actual[k]), int(g.actual[k]) - high, 0)
        out.append(
            GuestComparison(
                recording=rec.name,
                guest=g.name,
                real_killed=g.killed,
                sim_killed=bool(kills[-1] > 0),
                max_error=int(slack.max()),
                p95_error=int(np.percentile(np.abs(actual - g.actual), 95)),
            )
        )
    return out
