"""The journal never stops the daemon: a full disk or an unwritable file is counted and logged, the daemon
keeps ballooning, the file keeps whole lines only, and the first line after a failure says what was lost.

The file-size limit of a child process (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) stands in for a disk
that fills: the kernel then cuts a write short at the limit and fails the next one with EFBIG, as a full
file system does with ENOSPC. The real-VM suite fills a real tmpfs (tests/real/test_faults.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.errors import InvalidValueError
from autoballoon.journal import Journal, read_journal
from tests.helpers.simhost import sim_backend

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")
IDLE = """
[[guest]]
name = "idle"
count = 3
max = "2G"
target = "2G"
demand = { shape = "constant", level = "300M" }
"""


@needs_dev_full
def test_writes_to_a_full_device_are_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    journal = Journal(DEV_FULL)
    for i in range(5):
        journal.event(float(i), "status", f"entry {i}")
    assert journal.write_errors == 5
    assert [e["message"] for e in journal.recent()] == [f"entry {i}" for i in range(5)]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "/dev/full" in errors[0].getMessage()  # once per run of failures
    journal.close()


@needs_dev_full
def test_the_daemon_keeps_ballooning_with_its_journal_on_a_full_device() -> None:
    backend = sim_backend(IDLE, warmup=30)
    sim = backend.sim
    journal = Journal(DEV_FULL)
    controller = Controller(backend, backend.clock, DaemonConfig(), journal)
    for _ in range(60):
        controller.tick()
        sim.run(2)
    status = controller.status()
    assert status.actions_by_direction.get("shrink", 0) > 0  # idle guests were ballooned down
    assert all(vm.target_bytes < 2 * 1024**3 for vm in status.vms)
    assert journal.write_errors > 0


CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from autoballoon.journal import Journal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    path, limit = sys.argv[1], int(sys.argv[2])
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    journal = Journal(path)
    for i in range(40):
        journal.event(float(i), "status", "x" * 50, n=i)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the disk has room again
    journal.event(99.0, "status", "after", n=99)
    print(json.dumps({"errors": journal.write_errors, "ring": len(journal.recent())}))
    """
)


def test_a_disk_that_fills_leaves_whole_lines_and_says_what_was_lost(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    limit = 1000  # bytes: about 11 lines of ~90 bytes, the 12th cut short by the limit
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(proc.stdout)
    entries = read_journal(path)  # every line parses: the cut-short one was truncated off
    written = [e["n"] for e in entries if e.get("kind") == "status"]
    kept = len(written) - 1
    assert written == [*range(kept), 99] and kept + result["errors"] == 40 and 0 < kept < 40
    note = entries[-2]
    assert note["kind"] == "journal-error" and f"{result['errors']} journal entries" in note["message"]
    assert result["ring"] == 41
    assert path.stat().st_size <= limit + len(json.dumps(note)) + 200
    assert "cannot be written" in proc.stderr and proc.stderr.count("cannot be written") == 1


def test_the_daemon_survives_a_journal_that_fills_mid_run(tmp_path: Path) -> None:
    """``autoballoon run`` itself, with its file-size limit reached after a few ticks, still runs and
    balloons until SIGTERM, and exits 0."""
    path = tmp_path / "journal.jsonl"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        from autoballoon.cli import main
        main(["--connect", "sim:///demo?speed=50", "run", "--no-http", "--interval", "0.5",
              "--journal", {str(path)!r}])
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 3000):
            time.sleep(0.2)
        time.sleep(3)  # well past the limit: many more ticks, each with actions
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "cannot be written" in err
    entries = read_journal(path)
    assert any(e.get("kind") == "action" for e in entries)
    assert path.stat().st_size <= 4000


def test_an_unwritable_journal_path_is_refused_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidValueError, match="journal file"):
        Journal(blocker / "journal.jsonl")
    with pytest.raises(InvalidValueError, match="journal file"):
        Journal(str(tmp_path / "nul\x00byte"))
