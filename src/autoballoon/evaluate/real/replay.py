"""The real benchmark's runs as simulator replays: every policy's run on real guests becomes a
:class:`~autoballoon.sim.replay.Recording`, so the simulator can be checked against each of them.

A run trace (``autoballoon evaluate --real --record DIR``) samples what a replay needs: the targets the
daemon set, the balloon's ``actual``, the guest's MemAvailable, its OOM-kill count and what the memory hog
held. It does not sample ``AnonPages`` or the page cache, so the replay counts everything the first sample
shows in use, less what the hog held then, as the guest's kernel (its userland runs from an initramfs: a
few MiB), and the workload's demand is what the hog held on top of it.
"""

from __future__ import annotations

import gzip
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.real.calibration import calibration_from_json
from autoballoon.evaluate.real.trace import GuestTrace, JournalAction, RunTrace, read_trace
from autoballoon.sim.physics import Physics
from autoballoon.sim.replay import RecordedGuest, Recording, replay_physics

#: Recordings of policy runs are named ``SCENARIO--POLICY.json.gz``; the calibration is not one.
RUN_GLOB = "*--*.json.gz"
#: The calibration recorded with the runs (as ``evaluate --real --calibrate --record`` writes it).
CALIBRATION_FILE = "calibration.json.gz"


def recording_of(trace: RunTrace) -> Recording:
    """The run as a recording: its guests with the targets the policy set and what the guests did."""
    return Recording(
        name=f"{trace.scenario}--{trace.policy}",
        description=f"{trace.policy} on the real benchmark's {trace.scenario}",
        source=trace.source,
        guests=tuple(
            _guest(g, f"{trace.scenario}--{trace.policy}: {g.name}", trace.actions) for g in trace.guests
        ),
    )


def _column(g: GuestTrace, name: str, where: str) -> np.ndarray:
    """A sampled column as int64, a missing sample taking the one before it (the first must exist)."""
    raw = g.samples.get(name)
    if raw is None or not raw or raw[0] is None:
        raise InvalidValueError(
            f"{where}: samples {name!r}", raw if raw is None else raw[:1], "sampled values"
        )
    out, last = [], raw[0]
    for value in raw:
        last = value if value is not None else last
        out.append(last)
    return np.array(out, dtype=np.float64 if name == "t" else np.int64)


def _guest(g: GuestTrace, where: str, actions: Sequence[JournalAction]) -> RecordedGuest:
    times = _column(g, "t", where)
    if len(times) < 2 or not np.all(np.diff(times) > 0):
        raise InvalidValueError(f"{where}: samples", len(times), "two or more samples in increasing time")
    held = _column(g, "held", where)
    target, actual = _column(g, "target", where), _column(g, "actual", where)
    available = _column(g, "guest_mem_available", where)
    return RecordedGuest(
        name=g.name,
        max_bytes=g.memory,
        autodeflate=g.autodeflate,
        swap_bytes=g.swap,
        stats_period_s=float(g.stats_period_s),
        workload=tuple((c.at_s, _absolute(c.text, g.memory)) for c in g.commands),
        times=times,
        target=target,
        actual=actual,
        mem_available=available,
        anon=np.zeros(len(times), dtype=np.int64),  # not sampled: the demand is what the hog holds
        oom_kills=_column(g, "oom_kill", where),
        held=held,
        pinned_cache=0,
        # What the first sample shows in use, less what the hog held then, is the kernel's.
        kernel_bytes=max(0, int(actual[0] - available[0] - held[0])),
        # The daemon's journal says when each target was set: the samples see it up to 0.5 s later.
        moves=tuple(sorted((a.t, a.new_target) for a in actions if a.vm == g.domain and a.t >= 0)),
    )


def _absolute(command: str, memory: int) -> str:
    """A workload command with its sizes in per cent of the guest's memory (``alloc 10%``) in bytes."""
    return re.sub(r"(\d+(?:\.\d+)?)%", lambda m: f"{int(memory * float(m.group(1)) / 100)}B", command)


def recordings_in(directory: Path) -> list[Recording]:
    """Every policy run recorded in ``directory``, as recordings, in name order."""
    return [recording_of(read_trace(p)) for p in sorted(directory.glob(RUN_GLOB))]


#: When the balloon starts to move after a new target, in the benchmark's replays. The calibration
#: measures speeds, not this; the dedicated recordings saw 0.1-1.2 s, and in the benchmark a guest at its
#: OOM floor got 99 MiB back within 0.33 s of its target (tight-budget, the ramper at 43.2 s): with the
#: simulator's 0.5 s it would have been killed first.
BENCH_BALLOON_LATENCY_S = 0.3


def bench_physics(rec: Recording, directory: Path) -> Physics:
    """The physics a benchmark run is replayed with: the balloon's speeds measured by the calibration
    recorded beside it (``--calibrate``), else (or for a speed it did not measure) the simulator's own."""
    physics = replace(replay_physics(rec), balloon_latency_s=BENCH_BALLOON_LATENCY_S)
    path = directory / CALIBRATION_FILE
    if not path.exists():
        return physics
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        cal = calibration_from_json(json.load(fh))
    inflate, deflate = cal.inflate_bytes_s, cal.deflate_bytes_s
    return replace(
        physics,
        inflate_bps=int(statistics.median(inflate)) if inflate else physics.inflate_bps,
        deflate_bps=int(statistics.median(deflate)) if deflate else physics.deflate_bps,
    )
