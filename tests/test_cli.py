"""The operator CLI on the built-in simulated host: output shapes, and every refusal exits 2 unchanged."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

import autoballoon.cli as cli_module
from autoballoon.backends import open_backend
from autoballoon.backends.base import Backend
from autoballoon.cli import main
from autoballoon.units import GiB, MiB
from autoballoon.views import LIST_FIELDS
from tests.helpers.cli import run_cli


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """One simulated host shared by every CLI call of a test, so changes can be checked afterwards."""
    b = open_backend("sim:///demo")
    monkeypatch.setattr(cli_module, "open_backend", lambda uri: b)
    monkeypatch.setattr(b, "close", lambda: None)
    yield b


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "sim:///demo", *args)


def state(b: Backend) -> dict[str, object]:
    """Everything a command could change, for "nothing changed" checks."""
    snap = b.snapshot()
    return {
        g.name: (g.target_bytes, g.max_bytes, g.vcpus, asdict(g.balloon), b.get_policy(g.name))
        for g in snap.guests
    }


def some_vm(b: Backend) -> str:
    return next(g.name for g in b.snapshot().guests if g.state.active and g.persistent)


def test_list_json_as_a_subprocess_has_every_field() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autoballoon", "--connect", "sim:///demo", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows = json.loads(proc.stdout)
    assert len(rows) >= 4
    for row in rows:
        assert tuple(row) == LIST_FIELDS
        assert row["max_bytes"] >= row["target_bytes"] > 0
    with_stats = [r for r in rows if r["guest_available_bytes"] is not None]
    assert with_stats, "the demo host has guests reporting stats"
    assert all(r["stats_age_s"] is not None for r in with_stats)
    assert any(r["guest_available_bytes"] is None for r in rows), "the demo host has a guest without stats"


def test_tables_and_info_and_host(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    vm = some_vm(backend)
    code, out, _ = run(capsys, "list")
    assert code == 0 and vm in out
    code, out, _ = run(capsys, "info", vm, "--json")
    assert code == 0
    detail = json.loads(out)
    assert detail["name"] == vm and "stats" in detail and "balloon" in detail
    code, out, _ = run(capsys, "host", "--json")
    host = json.loads(out)
    assert code == 0 and host["vms_total"] >= 4
    assert host["overcommit_ratio"] == pytest.approx(
        host["sum_max_bytes"] / host["mem_total_bytes"], rel=1e-3
    )
    code, out, _ = run(capsys, "host")
    assert code == 0 and "Over-commit" in out


def test_setmem_changes_the_target(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    vm = some_vm(backend)
    g = backend.guest(vm)
    new = max(256 * MiB, g.max_bytes // 2)
    code, _, err = run(capsys, "setmem", vm, f"{new // MiB}M", "--live")
    assert code == 0, err
    assert backend.guest(vm).target_bytes == new


def test_policy_round_trip(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    vm = some_vm(backend)
    code, _, err = run(capsys, "policy", vm, "--min", "128M", "--shares", "2000", "--buffer", "15%")
    assert code == 0, err
    code, out, _ = run(capsys, "policy", vm, "--json")
    p = json.loads(out)
    assert p["min_bytes"] == 128 * MiB and p["shares"] == 2000 and p["buffer"] == pytest.approx(0.15)
    code, out, _ = run(capsys, "policy", vm, "--exclude", "--json")
    assert json.loads(out)["exclude"] is True


REFUSALS = [
    ("unknown VM", ["setmem", "no-such-vm", "512M"], "no-such-vm"),
    ("above max", ["setmem", "{vm}", "64T"], "above the VM's maximum"),
    ("below 128 MiB", ["setmem", "{vm}", "100M"], "100MiB"),
    ("malformed size", ["setmem", "{vm}", "4X"], "'4X'"),
    ("negative size", ["setmem", "{vm}", "-1G"], "'-1G'"),
    ("vcpus above max", ["setvcpus", "{vm}", "4096"], "maximum"),
    ("zero vcpus", ["setvcpus", "{vm}", "0"], "0"),
    ("maxmem without --config", ["setmaxmem", "{vm}", "2G"], "--config"),
    ("maxmem below floor", ["setmaxmem", "{vm}", "16M", "--config"], "floor"),
    ("bad balloon model", ["balloon", "{vm}", "--model", "bogus"], "bogus"),
    ("negative stats period", ["balloon", "{vm}", "--stats-period", "-3"], "-3"),
    ("negative shares", ["policy", "{vm}", "--shares", "-5"], "-5"),
    ("policy max above <memory>", ["policy", "{vm}", "--max", "64T"], "above the VM's <memory>"),
    ("policy min above max", ["policy", "{vm}", "--min", "1G", "--max", "512M"], "above the policy maximum"),
    ("bad buffer", ["policy", "{vm}", "--buffer", "lots"], "lots"),
]


@pytest.mark.parametrize(("why", "argv", "needle"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_requests_exit_2_and_change_nothing(
    backend: Backend, capsys: pytest.CaptureFixture[str], why: str, argv: list[str], needle: str
) -> None:
    vm = some_vm(backend)
    before = state(backend)
    code, out, err = run(capsys, *[a.format(vm=vm) for a in argv])
    assert code == 2, f"{why}: exit {code}, stdout {out!r}, stderr {err!r}"
    assert needle in err, f"{why}: message {err!r} does not name {needle!r}"
    assert state(backend) == before, f"{why}: something changed"


def test_below_the_policy_floor_is_refused(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    vm = some_vm(backend)
    assert run(capsys, "policy", vm, "--min", "1G")[0] == 0
    before = state(backend)
    code, _, err = run(capsys, "setmem", vm, "512M")
    assert code == 2 and "policy minimum" in err and "1GiB" in err
    assert state(backend) == before


def test_unknown_scheme_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        main(["--connect", "bogus://x", "list"])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and "sim:///demo" in err and "qemu:///system" in err


def test_sizes_reach_the_backend_in_bytes(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    vm = some_vm(backend)
    g = backend.guest(vm)
    kib = (g.max_bytes // 2) // 1024  # a bare number is KiB, as in virsh
    assert run(capsys, "setmem", vm, str(kib))[0] == 0
    assert backend.guest(vm).target_bytes == kib * 1024
    assert g.max_bytes <= 64 * GiB


def test_below_the_global_minimum_is_refused(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    vm = next(g.name for g in backend.snapshot().guests if g.state.active and g.policy.min_bytes is None)
    before = state(backend)
    code, _, err = run(capsys, "setmem", vm, "100M")  # the API's floor too: one for every door
    assert code == 2 and "smallest target autoballoon allows 128MiB" in err
    assert state(backend) == before


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("--listen", "nowhere", "--listen address"), ("--api-token-file", "missing-token", "API token file")],
)
def test_run_refuses_a_bad_server_option_before_creating_the_journal(
    backend: Backend,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    option: str,
    value: str,
    named: str,
) -> None:
    journal = tmp_path / "journal" / "j.jsonl"
    if option == "--api-token-file":
        value = str(tmp_path / value)
    code, _, err = run(capsys, "run", "--journal", str(journal), option, value)
    assert code == 2 and named in err and value in err
    assert not journal.parent.exists()


def test_run_sets_the_collector_threshold_from_the_config(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "autoballoon.toml"
    config.write_text("[tunables]\ncollector_young_threshold = 4321\n")
    before = gc.get_threshold()
    try:
        code, _, err = run(
            capsys, "run", "--once", "--no-http", "--config", str(config), "--journal", str(tmp_path / "j")
        )
        assert code == 0, err
        assert gc.get_threshold() == (4321, *before[1:])  # the older generations keep theirs
    finally:
        gc.set_threshold(*before)
