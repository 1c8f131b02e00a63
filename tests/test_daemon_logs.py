"""The daemon as journald and an operator's terminal see it: a line per action with its figures and the
rule that bound it, levels and --quiet/--verbose, ``run --once --dry-run`` printing its plan, SIGHUP
reloading the config (refusing a bad one) and reopening the journal for logrotate.

Before, ``run`` without ``--table`` wrote nothing to stdout or stderr in 12 s while it journalled 45
entries, and ``run --once --dry-run`` printed nothing at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal, read_journal
from autoballoon.model import GuestDecision
from autoballoon.reasons import RULES, binding_rule
from autoballoon.units import GiB, MiB
from tests.cli_runner import run_cli

DEMO = "sim:///demo?speed=20"
#: Real seconds a daemon subprocess is given to start and tick a few times (speed 20: 0.1 s a tick).
SETTLE_S = 4.0
WAIT_S = 20.0

D = GuestDecision(
    demand=GiB, want=2 * GiB, floor=128 * MiB, ceiling=4 * GiB, oom_floor=GiB + 64 * MiB,
    need=GiB + 128 * MiB, used=GiB, goal=2 * GiB,
)  # fmt: skip


@pytest.mark.parametrize(
    ("decision", "old", "new", "rule"),
    [
        (D, GiB, 2 * GiB, "want"),
        (D._replace(goal=GiB + GiB // 2), GiB, GiB + GiB // 2, "share-above-need"),
        (D._replace(goal=GiB + 100 * MiB), GiB, GiB + 100 * MiB, "share-below-need"),
        (D._replace(goal=GiB), 3 * GiB, GiB, "out-of-memory"),
        (D, 3 * GiB, 2 * GiB + 512 * MiB, "shrink-step"),
        (D, GiB, GiB + 512 * MiB, "paced-growth"),
        (D, 3 * GiB, 3 * GiB, "held"),
        (D, 2 * GiB - MiB, 2 * GiB - MiB, "least-step"),
        (D._replace(want=4 * GiB, goal=4 * GiB), GiB, 4 * GiB, "max"),
        (
            D._replace(want=64 * MiB, goal=128 * MiB, need=64 * MiB, oom_floor=64 * MiB),
            GiB,
            128 * MiB,
            "floor",
        ),
        (GuestDecision(floor=128 * MiB, ceiling=GiB), GiB, GiB, None),
    ],
)
def test_the_rule_that_bound_a_target(decision: GuestDecision, old: int, new: int, rule: str | None) -> None:
    assert binding_rule(decision, old, new) == rule
    assert rule is None or rule in RULES


def test_every_action_is_journalled_with_its_figures_and_rule() -> None:
    backend = SimBackend.open("sim:///demo?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    for _ in range(5):
        controller.tick()
        backend.clock.sleep(controller.config.interval_s)
    actions = [e for e in controller.journal.recent() if e.get("kind") == "action"]
    assert actions
    for a in actions:
        assert a["rule"] in RULES, a
        assert a["oom_floor"] <= a["need"] <= a["want"], a
        assert a["used"] is not None and a["floor"] is not None and a["goal"] is not None


def test_once_dry_run_prints_its_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--connect", "sim:///demo", "run", "--once", "--dry-run", "--no-http")
    assert code == 0, err
    lines = out.splitlines()
    assert {line.split(":")[0] for line in lines} == {"web", "db", "ci", "win10", "legacy", "stuck"}
    grows = [line for line in lines if ": grow " in line]
    assert grows and all("(dry run: not applied)" in line for line in grows)
    assert all("need " in line and "want " in line and "rule: " in line for line in grows)
    assert any("stays at" in line for line in lines)


class _Daemon:
    """``autoballoon run --no-http`` on the demo in a subprocess, its stderr in a file."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.err_path = tmp / "stderr.log"
        cmd = [sys.executable, "-m", "autoballoon", "--connect", DEMO, "run", "--no-http", *args]
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})}
            )

    def wait_started(self, text: str = "autoballoon started") -> None:
        """Until the daemon has said ``text`` (its signal handlers are in place by then)."""
        deadline = time.monotonic() + WAIT_S
        while text not in self.err_path.read_text():
            assert time.monotonic() < deadline, self.err_path.read_text()
            assert self.proc.poll() is None, self.err_path.read_text()
            time.sleep(0.1)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=WAIT_S)
        err = self.err_path.read_text()
        assert self.proc.returncode == 0, err
        return err


def test_the_daemon_logs_each_action_to_stderr(tmp_path: Path) -> None:
    daemon = _Daemon(tmp_path)
    daemon.wait_started()
    time.sleep(SETTLE_S)
    err = daemon.stop()
    infos = [line for line in err.splitlines() if " INFO " in line]
    assert any("autoballoon started" in line for line in infos)
    grows = [line for line in infos if ": grow " in line]
    assert grows, err
    assert all("rule: " in line for line in grows)  # a quarantine's or a stuck balloon's too
    managed = [line for line in grows if "(demand" in line or "(pressure" in line]
    assert managed and all("demand " in line and "need " in line and "want " in line for line in managed)
    assert any(" WARNING " in line and "without autodeflate" in line for line in err.splitlines())


def test_quiet_logs_warnings_only_and_journald_gets_priorities(tmp_path: Path) -> None:
    daemon = _Daemon(tmp_path, "--quiet", env={"JOURNAL_STREAM": "8:12345"})
    daemon.wait_started("without autodeflate")  # the first warnings: it runs, its handlers are set
    time.sleep(SETTLE_S)
    err = daemon.stop()
    lines = err.splitlines()
    assert lines and all(line.startswith("<4>") or line.startswith("<3>") for line in lines), lines[:5]
    assert not any(": grow " in line for line in lines)


def _wait_for(path: Path, text: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        entries = read_journal(path) if path.exists() else []
        if any(text in str(e.get("message", "")) for e in entries):
            return entries
        time.sleep(0.1)
    pytest.fail(f"{path} never said {text!r}")


def test_sighup_reloads_the_config_refuses_a_bad_one_and_reopens_the_journal(tmp_path: Path) -> None:
    config = tmp_path / "autoballoon.toml"
    config.write_text("[defaults]\nbuffer = 0.2\n")
    journal = tmp_path / "journal.jsonl"
    daemon = _Daemon(tmp_path, "--config", str(config), "--journal", str(journal))
    proc = daemon.proc
    try:
        _wait_for(journal, "autoballoon started")
        config.write_text("[defaults]\nbufer = 0.3\n")  # a typo: refused whole, the old config kept
        proc.send_signal(signal.SIGHUP)
        _wait_for(journal, "reload refused")
        assert proc.poll() is None
        rotated = tmp_path / "journal.jsonl.1"
        journal.rename(rotated)  # what logrotate does, before its postrotate sends SIGHUP
        config.write_text("[defaults]\nbuffer = 0.3\n")
        proc.send_signal(signal.SIGHUP)
        entries = _wait_for(journal, "configuration reloaded")
    finally:
        err = daemon.stop()
    assert [e for e in entries if e.get("kind") == "reload"]
    assert any("reload refused" in str(e.get("message")) and "bufer" in str(e.get("message"))
               for e in read_journal(rotated))  # fmt: skip
    assert "reload refused" in err  # and the log said so
