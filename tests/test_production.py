"""The production-like benchmark's pure parts: scenario validation, the rules of its metrics on traces
whose answers are known, the report section, the trace format, the accelerator choice and the schedule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.production.metrics import run_metrics, slowdown_pct, summarize
from autoballoon.evaluate.production.report import render_section, write_section
from autoballoon.evaluate.production.runner import FPR_ONLY, PLAYED, schedule
from autoballoon.evaluate.production.scenario import parse_prod_scenario
from autoballoon.evaluate.production.trace import (
    SAMPLE_FIELDS,
    AppRun,
    ProdGuestTrace,
    ProdTrace,
    read_prod_traces,
    write_prod_trace,
)
from autoballoon.evaluate.sections import PRODUCTION
from autoballoon.policy import parse_policies
from autoballoon.rig import accel
from autoballoon.rig.errors import RigError
from autoballoon.units import GiB, MiB

VALID: dict[str, Any] = {
    "host": {"budget": "2G"},
    "run": {"duration": 60, "repetitions": 3, "window": 20},
    "guest": [
        {"name": "db", "memory": "1536M", "app": "db"},
        {"name": "batch", "memory": "1G", "app": "batch", "every": 30},
    ],
}


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(VALID)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def test_a_valid_scenario_parses_with_its_sizes_in_bytes() -> None:
    s = parse_prod_scenario(VALID, source="x.toml", name="x")
    assert (s.budget, s.duration_s, s.repetitions, s.window_s) == (2 * GiB, 60.0, 3, 20.0)
    assert [(g.name, g.memory, g.app, g.every_s) for g in s.guests] == [
        ("db", 1536 * MiB, "db", None),
        ("batch", GiB, "batch", 30.0),
    ]


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("guest", 0, "app"), "redis", "one of db, web, batch, idle"),
        (("guest", 0, "memory"), "256M", "from 768M"),
        (("guest", 0, "every"), 10, "only a batch guest"),
        (("guest", 1, "every"), 0, "seconds from 10"),
        (("guest", 1, "name"), "db", "no other guest"),
        (("run", "repetitions"), 0, "whole number from 1 to 20"),
        (("run", "window"), 90, "seconds from 5 to 60"),
        (("run", "duration"), float("nan"), "seconds from 30"),
        (("host", "budget"), "9G", "at most the guests' memory together"),
        (("host", "budget"), "lots", "number with an optional unit"),
        (("run", "speed"), 2, "no such field"),
    ],
)
def test_a_bad_scenario_is_refused_naming_the_field_and_what_is_accepted(
    path: tuple[Any, ...], value: Any, says: str
) -> None:
    with pytest.raises(InvalidValueError) as err:
        parse_prod_scenario(_with(path, value), source="bad.toml", name="bad")
    assert "bad.toml" in str(err.value)
    assert says in str(err.value)


def test_a_batch_guest_without_its_interval_is_refused() -> None:
    data = _with(("guest", 1), {"name": "batch", "memory": "1G", "app": "batch"})
    with pytest.raises(InvalidValueError, match="every"):
        parse_prod_scenario(data, source="b.toml", name="b")


# -- metrics on traces whose answers are known --------------------------------------------------------

N = 10  # samples, one per second


def _guest(
    name: str, app: str, rss: int, *, actual: int = GiB, refaults: int = 0, steal: int = 0,
    runs: tuple[AppRun, ...] = (), available: int = 512 * MiB,
) -> ProdGuestTrace:  # fmt: skip
    samples: dict[str, list[Any]] = {k: [0] * N for k in SAMPLE_FIELDS}
    samples["t"] = [float(i) for i in range(N)]
    samples["qemu_rss"] = [rss] * N
    samples["actual"] = [actual] * N
    samples["target"] = [actual] * N
    samples["guest_mem_available"] = [available] * N
    samples["refault_file"] = [0] * (N - 1) + [refaults]
    samples["pgsteal"] = [0] * (N - 1) + [steal]
    samples["psi_some_us"] = [i * 100_000 for i in range(N)]  # 0.9 s of stall over the run
    return ProdGuestTrace(name, f"abtest-1-{name}", GiB, app, False, runs, samples)


def _run(policy: str, rss: int, rate: float, *, repetition: int = 1, **guest: Any) -> ProdTrace:
    db = _guest("db", "db", rss, runs=(AppRun(0.0, 5.0, 5.0, rate, 20.0), AppRun(5.0, 10.0, 5.0, rate, 40.0)),
                **guest)  # fmt: skip
    idle = _guest("idle", "idle", rss)
    budget = int(1.5 * GiB)
    return ProdTrace("mix", "mix.toml", policy, repetition, budget, float(N), 5.0, 0.0, "autoballoon run",
                     "tcg", 1.0, (db, idle))  # fmt: skip


def test_host_memory_returned_is_max_less_rss_over_time_and_the_budget_counts_rss() -> None:
    m = run_metrics(_run("autoballoon", 768 * MiB, 100.0, refaults=50, steal=1000))
    # Two guests, each 256 MiB below its 1 GiB for 10 s.
    assert m.host_returned == pytest.approx(2 * 256 * MiB * N)
    assert m.rss_above_budget_s == 0.0  # 1.5 GiB of RSS is not above a 1.5 GiB budget
    assert run_metrics(_run("static", GiB, 100.0)).rss_above_budget_s == N
    assert m.psi_some_s == pytest.approx(2 * 0.9)
    assert (m.refaults, m.reclaimed_pages) == (50, 1000)
    assert m.accuracy == pytest.approx(0.95)
    db = m.apps[0]
    assert (db.rate, db.p99_ms, db.runs) == (100.0, 30.0, 2)


def test_a_guest_under_the_oom_edge_counts_its_seconds() -> None:
    m = run_metrics(_run("mom", GiB, 100.0, available=16 * MiB))
    assert m.oom_edge_s == N  # only the db guest is near its edge


def test_slowdown_and_returned_memory_are_against_the_static_runs_median() -> None:
    runs = [_run("static", GiB, 100.0, repetition=r) for r in (1, 2, 3)]
    rates = ((1, 80.0), (2, 70.0), (3, 90.0))
    runs += [_run("autoballoon", 768 * MiB, rate, repetition=r) for r, rate in rates]
    rows = {r.policy: r for r in summarize([run_metrics(r) for r in runs])}
    db = rows["autoballoon"].apps[0]
    assert db.slowdown_pct is not None
    spread = (db.slowdown_pct.median, db.slowdown_pct.low, db.slowdown_pct.high)
    assert spread == pytest.approx((20.0, 10.0, 30.0))
    assert rows["autoballoon"].returned_vs_static.median == pytest.approx(2 * 256 * MiB * N)
    assert rows["static"].returned_vs_static.median == 0.0
    # Harm first: the static runs sit above budget all the time, so they rank last despite no slowdown.
    assert [r.policy for r in summarize([run_metrics(r) for r in runs])] == ["autoballoon", "static"]


def test_a_batch_job_is_slower_when_its_wall_time_grows() -> None:
    assert slowdown_pct("batch", 60.0, 50.0) == pytest.approx(20.0)
    assert slowdown_pct("db", 50.0, 100.0) == pytest.approx(50.0)
    assert slowdown_pct("db", 50.0, None) is None


# -- report, trace format ------------------------------------------------------------------------------


def test_the_section_replaces_only_itself_and_is_appended_when_absent(tmp_path: Path) -> None:
    runs = [_run("static", GiB, 100.0), _run("autoballoon", 768 * MiB, 80.0)]
    report = tmp_path / "evaluation-real.md"
    report.write_text("# Evaluation on real guests\n\nbusybox tables\n")
    write_section(tmp_path, runs, command="evaluate --production", wall_s=60.0)
    first = report.read_text()
    assert first.startswith("# Evaluation on real guests\n\nbusybox tables\n")
    assert first.count(PRODUCTION.begin) == 1 and "| autoballoon | 1 |" in first
    assert (tmp_path / "evaluation-real" / "production-mix.png").stat().st_size > 0
    write_section(tmp_path, runs, command="evaluate --production", wall_s=60.0)
    assert report.read_text() == first
    busybox_again = PRODUCTION.splice("# new busybox report\n", PRODUCTION.find(first) or "")
    assert busybox_again.startswith("# new busybox report\n") and PRODUCTION.find(busybox_again)


def test_a_report_without_static_runs_has_no_slowdown_but_is_written(tmp_path: Path) -> None:
    write_section(tmp_path, [_run("mom", 768 * MiB, 80.0)], command="c", wall_s=1.0)
    text = (tmp_path / "evaluation-real.md").read_text()
    assert "| mom | 1 |" in text and (tmp_path / "evaluation-real" / "production-mix.png").exists()
    (row,) = summarize([run_metrics(_run("mom", 768 * MiB, 80.0))])
    assert row.returned_vs_static is None  # nothing to compare with: not shown as if it were


def test_the_report_says_which_accelerator_ran() -> None:
    text = render_section([_run("static", GiB, 100.0)], command="c", wall_s=1.0)
    assert "guests under TCG" in text


def test_a_trace_reads_back_as_it_was_written(tmp_path: Path) -> None:
    trace = _run("autoballoon", 768 * MiB, 80.0, refaults=5, steal=9)
    write_prod_trace(trace, tmp_path)
    assert read_prod_traces(tmp_path) == [trace]
    with pytest.raises(InvalidValueError, match="recorded production runs"):
        read_prod_traces(tmp_path / "none")


# -- accelerator, policies, schedule ------------------------------------------------------------------


def _host(tmp_path: Path, *modules: str) -> tuple[Path, Path]:
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    for m in modules:
        (tmp_path / "sys" / m).mkdir(parents=True)
    (tmp_path / "sys").mkdir(exist_ok=True)
    return device, tmp_path / "sys"


def test_kvm_is_chosen_only_behind_a_hardware_module(tmp_path: Path) -> None:
    device, modules = _host(tmp_path, "kvm", "kvm_intel")
    assert accel.decide(None, device, modules).accel == "kvm"


def test_a_pvm_host_falls_back_to_tcg_saying_why(tmp_path: Path) -> None:
    device, modules = _host(tmp_path, "kvm", "kvm_pvm")
    choice = accel.decide(None, device, modules)
    assert choice.accel == "tcg" and "kvm_pvm" in choice.reason


def test_a_device_that_does_not_open_means_tcg_and_refuses_a_forced_kvm(tmp_path: Path) -> None:
    device, modules = _host(tmp_path, "kvm_amd")
    missing = tmp_path / "no-kvm"
    assert accel.decide(None, missing, modules).accel == "tcg"
    assert accel.decide("tcg", device, modules).accel == "tcg"
    with pytest.raises(RigError, match="does not open"):
        accel.decide("kvm", missing, modules)
    with pytest.raises(RigError, match="use kvm or tcg"):
        accel.decide("hvf", device, modules)


def test_every_repetition_rotates_the_policies() -> None:
    s = parse_prod_scenario(VALID, source="x.toml", name="x")
    order = schedule(s, ("a", "b", "c"))
    assert order == [(1, "b"), (1, "c"), (1, "a"), (2, "c"), (2, "a"), (2, "b"), (3, "a"), (3, "b"), (3, "c")]


def test_policies_are_the_daemons_and_fpr_only() -> None:
    assert FPR_ONLY in parse_policies("all", PLAYED)
    assert parse_policies("static,fpr-only", PLAYED) == ("static", FPR_ONLY)
    with pytest.raises(InvalidValueError, match="fpr-only"):
        parse_policies("static,oracle", PLAYED)


def test_a_window_whose_application_failed_counts_as_no_service() -> None:
    failed = AppRun(5.0, 10.0, 5.0, error="no result; the driver's last words: connection refused")
    trace = _run("mom", GiB, 100.0)
    db = replace(trace.guests[0], apps=(trace.guests[0].apps[0], failed))
    m = run_metrics(replace(trace, guests=(db, trace.guests[1])))
    assert (m.apps[0].rate, m.apps[0].failed) == (50.0, 1)
