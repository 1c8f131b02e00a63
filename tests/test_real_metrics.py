"""The real benchmark's metrics, report and trace files, on traces written by hand (no guests needed)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.real.metrics import (
    LOW_AVAILABLE_SHARE,
    above_budget_seconds,
    ranked,
    run_metrics,
)
from autoballoon.evaluate.real.report import metrics_table, write_report
from autoballoon.evaluate.real.trace import (
    SAMPLE_FIELDS,
    CommandRecord,
    GuestTrace,
    JournalAction,
    RunTrace,
    read_trace,
    targets_at,
    to_recording,
    trace_filename,
    write_trace,
)
from autoballoon.units import MiB
from tests.needs import need_module

MEM = 512 * MiB
N = 11  # samples at 0, 0.5, ..., 5.0 s


def columns(**overrides: list[Any]) -> dict[str, list[Any]]:
    base: dict[str, list[Any]] = {
        "t": [i * 0.5 for i in range(N)],
        "target": [MEM] * N,
        "actual": [300 * MiB] * N,
        "guest_mem_total": [MEM] * N,
        "guest_mem_available": [200 * MiB] * N,
        "guest_mem_free": [150 * MiB] * N,
        "guest_anon": [80 * MiB] * N,
        "guest_cached": [30 * MiB] * N,
        "guest_shmem": [20 * MiB] * N,
        "guest_swap_total": [0] * N,
        "guest_swap_free": [0] * N,
        "oom_kill": [0] * N,
        "pswpin": [0] * N,
        "pswpout": [0] * N,
        "pgmajfault": [0] * N,
        "psi_some_us": [0] * N,
        "psi_full_us": [0] * N,
        "held": [0] * N,
        "libvirt_total": [MEM] * N,
        "libvirt_available": [200 * MiB] * N,
        "libvirt_free": [150 * MiB] * N,
        "libvirt_last_update": [1_700_000_000 + i // 2 for i in range(N)],
        "qemu_rss": [400 * MiB] * N,
    }
    base.update(overrides)
    assert set(base) == set(SAMPLE_FIELDS)
    return base


def guest(name: str, domain: str, commands: tuple[CommandRecord, ...] = (), **cols: list[Any]) -> GuestTrace:
    return GuestTrace(name, domain, MEM, False, 0, 1, commands, columns(**cols))


def run(policy: str, guests: tuple[GuestTrace, ...], actions: tuple[JournalAction, ...] = ()) -> RunTrace:
    return RunTrace(
        "w", "w.toml", policy, 500 * MiB, 5.5, 1_700_000_000.0, "autoballoon run", guests, actions
    )


def test_oom_kills_are_the_counter_delta_and_missing_samples_are_skipped() -> None:
    g = guest("a", "d-a", oom_kill=[3, 3, None, 3, 4, 4, 4, 5, 5, 5, 5])
    assert run_metrics(run("p", (g,))).oom_kills == 2


def test_pressure_counts_psi_growth_swap_in_and_low_available() -> None:
    psi = [0, 0, 10, 10, 10, 10, 10, 10, 10, 10, 10]  # grew in (0.5, 1.0]
    swap = [0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7]  # grew in (1.5, 2.0]
    low = int(LOW_AVAILABLE_SHARE * MEM) - 1
    available = [200 * MiB] * 8 + [low, low, 200 * MiB]  # low at 4.0 and 4.5
    g = guest("a", "d-a", psi_some_us=psi, pswpin=swap, guest_mem_available=available)
    assert run_metrics(run("p", (g,))).pressure_s == 2.0
    assert run_metrics(run("p", (guest("b", "d-b"),))).pressure_s == 0.0


def test_above_budget_sums_actual_over_guests_on_a_common_grid() -> None:
    over = [200 * MiB] * 6 + [260 * MiB] * 5  # from 3.0 s on the two guests hold 560 MiB > 500
    a = guest("a", "d-a", actual=[300 * MiB] * N)
    b = guest("b", "d-b", actual=over)
    assert above_budget_seconds(run("p", (a, b))) == 2.5  # grid points 3.0 ... 5.0


def test_budget_unused_is_the_mean_gap_below_the_budget_and_goes_negative_above_it() -> None:
    over = [200 * MiB] * 6 + [260 * MiB] * 5
    a = guest("a", "d-a", actual=[300 * MiB] * N)
    b = guest("b", "d-b", actual=over)
    # Grid 0.0 ... 5.0: 6 points at 500 MiB held (0 unused), 5 at 560 MiB (60 MiB above the budget).
    assert run_metrics(run("p", (a, b))).budget_unused == round(-5 * 60 * MiB / 11)
    assert run_metrics(run("p", (a,))).budget_unused == 200 * MiB


def test_lowest_available_is_the_least_any_guest_reported() -> None:
    a = guest("a", "d-a", guest_mem_available=[200 * MiB] * 5 + [None, 7 * MiB] + [150 * MiB] * 4)
    b = guest("b", "d-b", guest_mem_available=[30 * MiB] * N)
    assert run_metrics(run("p", (a, b))).lowest_available == 7 * MiB
    blind = guest("c", "d-c", guest_mem_available=[None] * N)
    assert run_metrics(run("p", (blind,))).lowest_available is None


def test_reclaimed_by_balloon_and_at_the_host_are_means_over_the_run() -> None:
    g = guest("a", "d-a", actual=[512 * MiB] * 5 + [256 * MiB] * 6, qemu_rss=[100 * MiB] * N)
    m = run_metrics(run("p", (g,)))
    assert m.reclaimed_balloon == round(6 / 11 * 256 * MiB)
    assert m.reclaimed_host == 412 * MiB


def test_reaction_is_the_first_growth_of_the_target_after_an_allocation() -> None:
    cmds = (
        CommandRecord(0.0, "alloc 64M", 0.0, 0.5, "done"),
        CommandRecord(1.0, "ramp 100M 20M/s", 1.0, 6.0, "done"),
        CommandRecord(4.0, "free", 4.0, 4.5, "done"),
        CommandRecord(4.5, "alloc 8M", 4.5, 4.6, "done"),  # no growth after it: not followed
    )
    actions = (
        JournalAction(0.2, "d-a", MEM, 300 * MiB, "idle"),  # a shrink: not a reaction
        JournalAction(2.5, "d-a", 300 * MiB, 400 * MiB, "demand"),
        JournalAction(3.5, "d-a", 400 * MiB, 450 * MiB, "demand"),
        JournalAction(2.0, "d-other", 300 * MiB, 400 * MiB, "demand"),  # another guest's
    )
    m = run_metrics(run("p", (guest("a", "d-a", cmds),), actions))
    assert m.guests[0].reactions_s == (1.5,)
    assert m.unanswered == 1  # the alloc at second 0 sets the guest up and is not counted
    assert (m.reaction_p50_s, m.reaction_max_s) == (1.5, 1.5)


def test_targets_follow_the_journal_from_the_guests_max() -> None:
    actions = (JournalAction(1.0, "d", MEM, 300 * MiB, "idle"), JournalAction(2.0, "x", MEM, 1, "idle"))
    assert targets_at([0.0, 0.5, 1.0, 2.5], actions, "d", MEM) == [MEM, MEM, 300 * MiB, 300 * MiB]


def test_rows_rank_harm_first_then_reclaim() -> None:
    kill = guest("a", "d", oom_kill=[0] * 5 + [1] * 6, actual=[100 * MiB] * N)
    big = guest("a", "d", actual=[100 * MiB] * N)
    small = guest("a", "d", actual=[400 * MiB] * N)
    over = guest("a", "d", actual=[600 * MiB] * N)
    rows = [
        run_metrics(run(p, (g,))) for p, g in [("kill", kill), ("small", small), ("over", over), ("big", big)]
    ]
    assert [m.policy for m in ranked(rows)] == ["big", "small", "over", "kill"]
    table = metrics_table(rows)
    assert table.index("| big |") < table.index("| small |") < table.index("| kill |")


def test_trace_files_round_trip_and_refuse_another_format(tmp_path: Path) -> None:
    original = run("p", (guest("a", "d-a", (CommandRecord(0.0, "alloc 64M", 0.0, 0.5, "done"),)),),
                   (JournalAction(1.0, "d-a", MEM, 300 * MiB, "idle"),))  # fmt: skip
    path = write_trace(original, tmp_path / trace_filename("w", "p"))
    assert path.name == "w--p.json.gz"
    assert read_trace(path) == original
    plain = write_trace(original, tmp_path / "w.json")
    assert read_trace(plain) == original
    plain.write_text('{"format": "other"}')
    with pytest.raises(InvalidValueError, match="format"):
        read_trace(plain)


def test_report_has_a_table_per_workload_and_a_plot(tmp_path: Path) -> None:
    need_module("matplotlib", "pip install 'autoballoon[eval]' (make test installs it)")
    cmds = (CommandRecord(1.0, "alloc 64M", 1.0, 1.5, "killed"),)
    runs = [
        run("autoballoon", (guest("a", "d1", cmds, oom_kill=[0] * 4 + [1] * 7), guest("b", "d2"))),
        run("static", (guest("a", "d3", cmds), guest("b", "d4"))),
    ]
    path = write_report(
        tmp_path, runs, command="autoballoon evaluate --real", wall_s=60.0, calibration_md=None
    )
    text = path.read_text()
    assert "### w" in text and "| static | 0 |" in text and "| autoballoon | 1 |" in text
    assert "Pressure seconds" in text and "Lowest MemAvailable" in text  # the rules are stated
    assert "| budget unused MiB | lowest MemAvailable MiB |" in text
    # Two balloons at 300 MiB on a 500 MiB budget: reclaimed 2 × (512 - 300), 100 MiB above the budget.
    assert "| static | 0 | 6 | 0 | 424 | 224 | -100 | 200 |" in text
    png = tmp_path / "evaluation-real" / "w.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_daemon_config_names_only_its_guests_and_the_budget() -> None:
    need_module("libvirt", "pip install 'autoballoon[libvirt]' (needs libvirt-dev and pkg-config)")
    from autoballoon.evaluate.real.harness import daemon_config

    text = daemon_config(["abtest-1-1", "abtest-1-2"], 700 * MiB, Path("/tmp/j.jsonl"))
    assert 'manage = ["abtest-1-1", "abtest-1-2"]' in text
    assert 'budget = "700MiB"' in text and 'journal = "/tmp/j.jsonl"' in text
    from autoballoon.config import parse_config

    config = parse_config(tomllib.loads(text))
    assert config.manage == ("abtest-1-1", "abtest-1-2") and config.tunables.host_budget_bytes == 700 * MiB
    assert config.health.host_load_factor >= 100  # the neighbours' load must not pause this daemon
    assert config.defaults.min_bytes == 128 * MiB  # Proxmox balloons only guests with a minimum


def test_calibration_summary_lists_what_survived_every_trial() -> None:
    from autoballoon.evaluate.real.calibration import Calibration, OomTrial, edge_summary, render_calibration

    def trial(kind: str, size: int, rate: int, killed: bool) -> OomTrial:
        before = 30 * MiB if killed else None
        return OomTrial(64 * MiB, 63 * MiB, kind, size, rate, killed, 1.5, 1.0 if killed else None,
                        20 * MiB, before, before, 0.5 if killed else None)  # fmt: skip

    trials = (
        trial("ramp", 320 * MiB, 10 * MiB, False),
        trial("ramp", 320 * MiB, 40 * MiB, False),
        trial("ramp", 320 * MiB, 40 * MiB, True),  # one of two trials died: not safe
        trial("alloc", 32 * MiB, 0, False),
        trial("alloc", 64 * MiB, 0, True),
    )
    (line,) = edge_summary(trials)
    assert line == (
        "N = 64 MiB: ramps (MiB/s) survived 10, killed 40; at-once allocations (MiB) survived 32, killed 64."
    )
    text = render_calibration(Calibration((0.4, 0.6), (300 * MiB,), (2000 * MiB,), (), trials, 12.0))
    assert "median 0.50, min 0.40, max 0.60 (2 times) s" in text
    assert "| 63 | alloc 64 MiB at once | yes |" in text and "not measured" in text


def test_a_trace_converts_to_the_simulators_replay_format() -> None:
    cmds = (CommandRecord(1.0, "ramp 64M 16M/s", 1.0, 5.0, "done"),)
    held = [0, 0, 16 * MiB, 32 * MiB, 48 * MiB, 64 * MiB] + [64 * MiB] * 5
    trace = run("static", (guest("a", "d1", cmds, held=held, actual=[MEM] * 10 + [None]),))
    rec = to_recording(trace, "why")
    assert (rec["format"], rec["name"], rec["description"]) == ("autoballoon-recording/1", "w--static", "why")
    (g,) = rec["guests"]
    assert (g["name"], g["max_bytes"], g["swap_bytes"], g["workload"]) == (
        "a",
        MEM,
        0,
        [[1.0, "ramp 64M 16M/s"]],
    )
    assert len(g["samples"]) == N - 1  # the sample without libvirt's actual is left out
    first = g["samples"][0]
    assert (
        first["target_bytes"] == MEM and first["meminfo"]["AnonPages"] == 80 * MiB and first["oom_kills"] == 0
    )
    assert [x["held_mib"] for x in g["samples"]][:6] == [0, 0, 16, 32, 48, 64]
    old = run("static", (GuestTrace("a", "d", MEM, False, 0, 1, cmds, {"t": [0.0]}),))
    with pytest.raises(InvalidValueError, match="AnonPages"):
        to_recording(old)


def test_the_mechanisms_results_beside_the_traces_are_reported(tmp_path: Path) -> None:
    from autoballoon.evaluate.real.command import MECHANISMS_FILE, _mechanisms

    assert _mechanisms(tmp_path) is None  # not measured: no section
    rows = [
        {"mechanism": "balloon", "mean_rss_mib": 681.0, "final_rss_mib": 705.0, "reclaimed_mib": 343.0,
         "oom_kills": 0, "pressure_s": 0.0, "actions": 5},
        {"mechanism": "report", "mean_rss_mib": 552.0, "final_rss_mib": 417.0, "reclaimed_mib": 472.0,
         "oom_kills": 0, "pressure_s": None, "actions": 0},
    ]  # fmt: skip
    (tmp_path / MECHANISMS_FILE).write_text(json.dumps(rows))
    text = _mechanisms(tmp_path) or ""
    assert "| balloon | 0 | 0.0 | 343 | 681 | 705 | 5 |" in text
    assert "| report | 0 | n/a | 472 | 552 | 417 | 0 |" in text
    (tmp_path / MECHANISMS_FILE).write_text('[{"mechanism": "balloon"}]')
    with pytest.raises(InvalidValueError, match=r"mechanisms\.json"):
        _mechanisms(tmp_path)
