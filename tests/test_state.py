"""The state store: atomic saves that survive kill -9, loads that never crash on a bad file."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from autoballoon.config import parse_config
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.state import FILE_MODE, MAX_BYTES, StateStore
from tests.helpers.simhost import sim_backend


class Memory(BaseModel):
    """A stand-in for what the controller will keep: quarantines with their reason and start time."""

    quarantined: dict[str, tuple[str, float]] = {}
    holds: dict[str, float] = {}


def test_round_trip_and_file_mode(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "sub" / "state.json")  # the directory is created
    mem = Memory(quarantined={"win10": ("cpu storm", 1700000000.5)}, holds={"db": 1700000300.0})
    assert store.save(mem, now=1700000001.0)
    assert store.load(Memory) == mem
    assert store.load() == {
        "quarantined": {"win10": ["cpu storm", 1700000000.5]},
        "holds": {"db": 1700000300.0},
    }
    assert (store.path.stat().st_mode & 0o777) == FILE_MODE
    assert json.loads(store.path.read_text())["saved_at"] == 1700000001.0
    assert [p.name for p in store.path.parent.iterdir()] == ["state.json"]  # no temp file left


def test_a_missing_file_is_a_first_start_and_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert StateStore(tmp_path / "none.json").load() is None
    assert not caplog.records


ENVELOPE = '{"format":"autoballoon-state","version":1,"saved_at":1.0,"data":%s}'


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not JSON"),
        (b'{"format":"autoballoon-state","version":1,"saved_at":1.0,"data":{"quar', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not"),
        (b'{"format":"autoballoon-state","version":1,"saved_at":NaN,"data":{}}', "not JSON"),
        (b'{"hello":"world"}', "not an autoballoon state file"),
        (b'{"format":"other-tool","version":1,"saved_at":1.0,"data":{}}', "not an autoballoon state file"),
        (b'{"format":"autoballoon-state","version":2,"saved_at":1.0,"data":{}}', "newer autoballoon"),
        (b'{"format":"autoballoon-state","version":"1","saved_at":1.0,"data":{}}', "not an autoballoon"),
        (b'{"format":"autoballoon-state","version":1,"saved_at":1.0,"data":[]}', "not an autoballoon"),
        ((ENVELOPE % '{"quarantined":{"x":"not a pair"}}').encode(), "does not fit"),
        ((ENVELOPE % '{"holds":{"x":' + "[" * 50_000 + "]" * 50_000 + "}}").encode(), "not"),
    ],
    ids=lambda v: v[:30] if isinstance(v, bytes) else v,
)
def test_a_corrupt_or_foreign_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    assert StateStore(path).load(Memory) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and why in warnings[0] and str(path) in warnings[0]


def test_a_huge_file_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    with path.open("wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: costs no disk
    assert StateStore(path).load() is None
    assert "larger than" in caplog.text


def test_a_directory_where_the_file_should_be_is_ignored_on_load_and_counted_on_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    store = StateStore(path)
    assert store.load() is None
    assert not store.save({"a": 1})
    assert store.write_errors == 1 and "cannot save state" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the temp file was removed


def test_a_failed_save_keeps_the_previous_document(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    assert store.save({"generation": 1})
    assert not store.save({"bad": float("nan")})  # not JSON: refused before anything is written
    assert not store.save({"bad": object()})
    assert store.load() == {"generation": 1} and store.write_errors == 2


FULL_DISK = textwrap.dedent(
    """
    import json, resource, signal, sys
    from autoballoon.state import StateStore
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    store = StateStore(sys.argv[1])
    first = store.save({"generation": 1})
    second = store.save({"generation": 2, "pad": "x" * 10_000})
    print(json.dumps([first, second, store.write_errors, store.load()]))
    """
)


def test_a_save_that_the_disk_cannot_hold_keeps_the_previous_document(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(proc.stdout) == [True, False, 1, {"generation": 1}]
    assert "cannot save state" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


WRITER = textwrap.dedent(
    """
    import sys
    from autoballoon.state import StateStore
    store = StateStore(sys.argv[1])
    big = "x" * 200_000  # large enough that a save takes a while, so kills land inside one
    n = (store.load() or {}).get("n", 0) + 1  # as a restarted daemon does
    store.save({"n": n, "pad": big})  # a document exists before any kill; a loaded machine may be slow
    print("ready", flush=True)
    while True:
        n += 1
        store.save({"n": n, "pad": big})
    """
)


def test_kill_9_during_saves_leaves_a_whole_document(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    seen = []
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.15 + 0.05 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        data = StateStore(path).load()
        assert data is not None, f"round {round_}: the state file was not whole after kill -9"
        seen.append(data["n"])
    assert all(a < b for a, b in itertools.pairwise(seen)), seen  # each start went on from the last save
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # loads swept the killed saves' temp files


def test_a_run_of_failed_saves_logs_one_error_and_the_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A controller saves again every tick while saves fail (a read-only disk): 1,800 error lines an
    hour, unless only the first of the run is logged."""
    config = parse_config({})
    backend = sim_backend()
    clock = backend.clock
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    store = StateStore(blocker / "state.json")
    controller = Controller(backend, clock, config, Journal(), store=store)
    with caplog.at_level(logging.DEBUG, logger="autoballoon.state"):
        for _ in range(5):
            controller.tick()
            clock.sleep(config.tunables.state_save_interval_s + 1)
    errors = [r for r in caplog.records if r.name == "autoballoon.state" and r.levelno >= logging.ERROR]
    assert store.write_errors == 5 and len(errors) == 1, [r.getMessage() for r in errors]
    blocker.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autoballoon.state"):
        controller.tick()
        clock.sleep(config.tunables.state_save_interval_s + 1)
        controller.tick()
    said = [r.getMessage() for r in caplog.records if r.name == "autoballoon.state"]
    assert len(said) == 1 and "5 saves had failed" in said[0], said
    assert store.load() is not None and store.write_errors == 5
