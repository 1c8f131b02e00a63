"""``autoballoon evaluate --real`` end to end on a small workload: the harness boots fresh guests per
policy, runs the daemon as a user would, plays the workload, samples, records and reports. This checks
the instrument, not any policy's verdict (that is ``make realbench``'s job)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoballoon.evaluate.real.trace import read_trace, trace_filename
from autoballoon.units import MiB
from tests.real.conftest import Rig

pytestmark = pytest.mark.realvm

DURATION_S = 30
SCENARIO = f"""
# A small check of the harness: a ramp, a guest that allocates more than it has, a guest with swap.
[host]
budget = "900M"
[run]
duration = {DURATION_S}
[[guest]]
name = "ramper"
workload = [[0, "alloc 32M"], [10, "ramp 64M 16M/s"], [22, "free"]]
[[guest]]
name = "victim"
workload = [[12, "alloc 600M"]]
[[guest]]
name = "swapper"
swap = "128M"
workload = [[5, "alloc 32M"]]
"""
RUN_TIMEOUT_S = 300


def test_evaluate_real_records_samples_commands_and_kills(rig: Rig, tmp_path: Path) -> None:
    policies = ["autoballoon", "static"]
    scenario = tmp_path / "check.toml"
    scenario.write_text(SCENARIO)
    record, report = tmp_path / "rec", tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "autoballoon", "--connect", "qemu:///system", "evaluate", "--real",
         "--scenarios", str(scenario), "--policies", ",".join(policies), "--record", str(record),
         "--report", str(report), "--json"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert sorted(r["policy"] for r in rows) == sorted(policies)

    for row in rows:
        assert row["scenario"] == "check"
        trace = read_trace(record / trace_filename("check", row["policy"]))
        ramper, victim, swapper = trace.guests
        assert len({g.domain for g in trace.guests}) == 3
        for g in trace.guests:
            s = g.samples
            assert len(s["t"]) >= 0.8 * DURATION_S / 0.5, len(s["t"])
            assert 0.4 <= statistics.median(b - a for a, b in zip(s["t"], s["t"][1:], strict=False)) <= 0.7
            assert s["target"][0] == g.memory
            for key in (
                "guest_mem_available",
                "actual",
                "libvirt_available",
                "libvirt_last_update",
                "qemu_rss",
            ):
                assert sum(v is None for v in s[key]) <= 2, (g.name, key)
        _check_commands(ramper.commands, victim.commands)
        assert victim.samples["oom_kill"][-1] > victim.samples["oom_kill"][0]
        assert row["oom_kills"] >= 1 and [gm["oom_kills"] for gm in row["guests"]][1] >= 1
        assert 127 * MiB <= max(swapper.samples["guest_swap_total"]) <= 128 * MiB
        assert max(ramper.samples["held"]) == 96 * MiB and ramper.samples["held"][-1] == 0
        assert {a.vm for a in trace.actions} <= {g.domain for g in trace.guests}

    text = (report / "evaluation-real.md").read_text()
    assert "### check" in text and all(f"| {p} |" in text for p in policies)
    assert (report / "evaluation-real" / "check.png").read_bytes()[:4] == b"\x89PNG"


def _check_commands(ramper: Any, victim: Any) -> None:
    _, ramp, free = ramper
    assert [c.outcome for c in ramper] == ["done", "done", "done"]
    assert ramp.started_s is not None and ramp.finished_s is not None
    assert 3.0 <= ramp.finished_s - ramp.started_s <= 8.0  # 64 MiB at 16 MiB/s, sampled every 0.5 s
    assert free.finished_s is not None and free.finished_s - free.at_s <= 2.0
    (grab,) = victim
    assert grab.outcome == "killed"
