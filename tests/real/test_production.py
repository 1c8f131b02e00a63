"""``autoballoon evaluate --production`` end to end on one production-like Debian guest: the rig builds (or
finds cached) the Debian image, boots it under KVM where this host has it, ages it, runs the daemon as a
user would with a budget that forces reclaim, drives pgbench, and records and reports. This checks the
instrument (the figure of merit, the refault and reclaim counters, QEMU's RSS are read), not any policy's
verdict (that is ``make prodbench``'s job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoballoon.evaluate.production.trace import read_prod_traces
from autoballoon.evaluate.sections import PRODUCTION
from autoballoon.rig import accel
from autoballoon.units import MiB
from tests.real.conftest import Rig

pytestmark = pytest.mark.realvm

DURATION_S = 40
GUEST = 1024 * MiB
SCENARIO = f"""
# One database guest, its budget well under its memory: the daemon must shrink it into its page cache.
[host]
budget = "768M"
[run]
duration = {DURATION_S}
repetitions = 1
window = 15
[[guest]]
name = "db"
memory = "1G"
app = "db"
"""
#: The image build (about 2.5 min, once per machine and recipe) happens in the rig fixture's first use.
RUN_TIMEOUT_S = 900


def test_the_harness_reads_merit_refaults_and_rss_of_a_real_database(rig: Rig, tmp_path: Path) -> None:
    rig.debian_image()  # built or found before the timed run
    scenario = tmp_path / "one.toml"
    scenario.write_text(SCENARIO)
    record, report = tmp_path / "rec", tmp_path / "docs"
    done = subprocess.run(
        [sys.executable, "-m", "autoballoon", "--connect", "qemu:///system", "evaluate", "--production",
         "--scenarios", str(scenario), "--policies", "autoballoon", "--record", str(record),
         "--report", str(report), "--json"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    rows = json.loads(done.stdout)
    assert [r["policy"] for r in rows] == ["autoballoon"]

    (trace,) = read_prod_traces(record)
    assert trace.accel == accel.choose().accel
    (db,) = trace.guests
    assert db.app == "db" and len(db.apps) >= 2  # two 15 s windows fit in 40 s
    for window in db.apps:
        assert window.rate is not None and window.rate > 0, window
        assert window.p99_ms is not None and window.p99_ms > 0, window
    s = db.samples
    n = len(s["t"])
    assert n >= DURATION_S * 0.8
    for key in ("refault_file", "refault_anon", "pgsteal", "pgscan", "qemu_rss", "actual"):
        read = [v for v in s[key] if v is not None]
        assert len(read) >= 0.9 * n, f"{key}: only {len(read)} of {n} samples"
    # Aged: QEMU's RSS stood near <memory> when the daemon started, and the budget made the daemon
    # shrink the guest, so the guest kernel reclaimed pages during the run.
    assert s["qemu_rss"][0] is not None and s["qemu_rss"][0] > 0.8 * GUEST
    assert min(v for v in s["actual"] if v is not None) < GUEST
    assert (s["pgsteal"][-1] or 0) > (s["pgsteal"][0] or 0)
    assert [a.new_target < a.old_target for a in trace.actions].count(True) >= 1

    text = (report / "evaluation-real.md").read_text()
    assert PRODUCTION.find(text) is not None and "| autoballoon | 1 |" in text
    assert (report / "evaluation-real" / "production-one.png").stat().st_size > 0
