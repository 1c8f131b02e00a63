"""The simulator against real guests: every recorded real run, replayed with the recorded targets.

Each recording in ``tests/replay/`` (made by ``python -m tests.replay.record`` on the rig's real
libvirt/QEMU/Linux guests) holds the targets the host set, the workload each guest ran, and what really
happened. The simulator gets the same guests, the workload as demand and the *same target trajectory*
(no policy), and must predict:

- the same OOM / no-OOM outcome for every guest;
- an ``actual`` trajectory within :data:`BOUND` of the real one at every sample, allowing
  :data:`autoballoon.sim.replay.TIMING_SLACK_S` of timing (the rig's balloon speed varies with load),
  and within :data:`P95_BOUND` at the same instant for 95 % of the samples.

Needs no rig: it reads the recordings. ``docs/scenarios.md`` ("Replaying real guests") lists what the
model still gets wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.real.replay import bench_physics, recordings_in
from autoballoon.sim.replay import (
    TIMING_SLACK_S,
    Recording,
    compare,
    load_recording,
    recorded_demand,
    replay,
    workload_demand,
)
from autoballoon.units import MiB

RECORDINGS = sorted((Path(__file__).parent / "replay").glob("*.json"))
#: 16 MiB: 3 % of the rig's 512 MiB guests, and a sixth of the smallest allocation recorded.
BOUND = 16 * MiB
P95_BOUND = 32 * MiB
#: Every policy's run of the real benchmark (``make realbench`` records them here).
BENCH_DIR = Path(__file__).parents[1] / "scenarios" / "real" / "recorded"
BENCH_RUNS = recordings_in(BENCH_DIR)
#: The benchmark's runs are replayed with the balloon speeds its own calibration measured; they sample
#: every 0.5 s, and a target lands between two samples, so the same-instant error is looser.
BENCH_BOUND = 32 * MiB
BENCH_P95_BOUND = 48 * MiB


def test_there_are_real_recordings_to_replay() -> None:
    assert len(RECORDINGS) >= 2
    guests = [g for path in RECORDINGS for g in load_recording(path).guests]
    # Both outcomes are recorded, with and without autodeflate: a replay that always said "no kill"
    # (or always "kill") could not pass.
    assert any(g.killed for g in guests) and any(not g.killed for g in guests)
    assert any(g.autodeflate for g in guests) and any(not g.autodeflate for g in guests)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_the_simulator_predicts_what_real_guests_did(path: Path) -> None:
    rec = load_recording(path)
    for c in compare(rec, replay(rec)):
        where = f"{c.recording}/{c.guest}"
        assert c.same_outcome, f"{where}: real OOM kill {c.real_killed}, simulated {c.sim_killed}"
        assert c.max_error <= BOUND, (
            f"{where}: actual off by {c.max_error / MiB:.0f} MiB (±{TIMING_SLACK_S} s)"
        )
        assert c.p95_error <= P95_BOUND, f"{where}: 95th percentile error {c.p95_error / MiB:.0f} MiB"


def test_every_real_benchmark_run_is_recorded() -> None:
    """Four policies on each of the eight workloads; with kills in some (so the replay can disagree)."""
    assert len(BENCH_RUNS) >= 32
    assert any(g.killed for r in BENCH_RUNS for g in r.guests)


@pytest.mark.parametrize("rec", BENCH_RUNS, ids=lambda r: r.name)
def test_the_simulator_predicts_every_real_benchmark_run(rec: Recording) -> None:
    """The real benchmark's runs, every policy's, replayed with the targets the policy set: the same OOM /
    no-OOM outcome for every guest, and ``actual`` within the stated bounds."""
    for c in compare(rec, replay(rec, bench_physics(rec, BENCH_DIR))):
        where = f"{c.recording}/{c.guest}"
        assert c.same_outcome, f"{where}: real OOM kill {c.real_killed}, simulated {c.sim_killed}"
        assert c.max_error <= BENCH_BOUND, f"{where}: actual off by {c.max_error / MiB:.0f} MiB"
        assert c.p95_error <= BENCH_P95_BOUND, f"{where}: 95th percentile error {c.p95_error / MiB:.0f} MiB"


def test_a_wrong_physics_is_caught() -> None:
    """The replay can fail: a balloon that could never push a guest into the OOM killer (the model
    before the recordings) misses the real kill."""
    from dataclasses import replace

    from autoballoon.sim.physics import DEFAULT_PHYSICS
    from autoballoon.sim.replay import replay_physics

    rec = load_recording(Path(__file__).parent / "replay" / "squeeze.json")
    never_at_watermark = replace(replay_physics(rec), min_free_ceiling_bytes=0, min_free_floor_bytes=0)
    outcomes = {c.guest: c.sim_killed for c in compare(rec, replay(rec, never_at_watermark))}
    assert outcomes["inflate-into-use"] is False  # the real guest was killed
    slow = replace(replay_physics(rec), deflate_bps=DEFAULT_PHYSICS.deflate_bps // 20)
    assert any(c.max_error > BOUND for c in compare(rec, replay(rec, slow)))


def test_workload_commands_become_demand() -> None:
    trace = workload_demand([(10.0, "alloc 100M"), (20.0, "ramp 50M 10M/s"), (40.0, "free")], 4 * MiB, 60.0)
    t = np.array(trace.times)
    v = np.array(trace.values)
    assert np.interp(5.0, t, v) == 4 * MiB
    assert np.interp(19.0, t, v) == 104 * MiB  # an allocation "at once" is touched at the rig's speed
    assert np.interp(22.5, t, v) == pytest.approx(129 * MiB)  # 2.5 s into a 10 MiB/s ramp
    assert np.interp(50.0, t, v) == 4 * MiB
    with pytest.raises(InvalidValueError):
        workload_demand([(1.0, "explode")], 0, 10.0)


def test_demand_follows_the_hog_until_it_is_killed() -> None:
    rec = load_recording(Path(__file__).parent / "replay" / "squeeze.json")
    g = next(g for g in rec.guests if g.killed)
    trace = recorded_demand(g, rec.duration)
    kill = int(np.flatnonzero(g.oom_kills > 0)[0])
    before = g.times[kill - 1]
    assert np.interp(before, trace.times, trace.values) == g.anon[0] + g.held[kill - 1]
    # After the kill the hog held nothing, but its workload still wanted its memory.
    assert np.interp(g.times[kill] + 1, trace.times, trace.values) > g.anon[0] + g.held[kill]


def test_a_malformed_recording_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "autoballoon-recording/1", "guests": [{"name": "g"}]}))
    with pytest.raises(InvalidValueError, match=r"bad\.json: guest #1"):
        load_recording(path)


def test_a_calibration_that_measured_no_speed_leaves_the_simulators_own(tmp_path: Path) -> None:
    """A calibration whose balloon never moved (no speeds) is not a median of nothing."""
    import gzip

    from autoballoon.evaluate.real.calibration import Calibration
    from autoballoon.sim.replay import replay_physics

    rec = BENCH_RUNS[0]
    empty = Calibration((), (), (), (), (), 0.0)
    with gzip.open(tmp_path / "calibration.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(empty.to_json(), fh)
    physics = bench_physics(rec, tmp_path)
    assert (physics.inflate_bps, physics.deflate_bps) == (
        replay_physics(rec).inflate_bps,
        replay_physics(rec).deflate_bps,
    )
