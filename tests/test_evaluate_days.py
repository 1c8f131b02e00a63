"""The per-day breakdown of a run longer than a day: its figures, their labels, the bars built on them
and the report's table. The days are checked against the run's own totals: they sum to the whole."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autoballoon.evaluate.metrics import DAY_S, Day, Metrics, burst_days
from autoballoon.evaluate.report import days_table
from autoballoon.evaluate.runner import Job, run_simulation
from autoballoon.evaluate.summary import kill_checks
from autoballoon.sim.scenario import loads_scenario

# Two days and a half at 10 s steps. "nightly" jumps by 2 GiB at 02:00 UTC (13,600 s in) each night and
# has no swap; "swapper" jumps by 1.25 GiB at noon each day with 2 GiB of swap. Booted small, under the
# static policy (which never moves a target) both are harmed every day: kills and pressure to count.
TWO_DAYS = """
[host]
ram = "16G"
reserve = "512M"
[run]
duration = 216000
step = 10
[[guest]]
name = "nightly"
max = "4G"
target = "1G"
swap = "0"
demand = { shape = "steps", points = [[0, "512M"], [13600, "2560M"], [15400, "512M"], [100000, "2560M"],
                                      [101800, "512M"], [186400, "2560M"], [188200, "512M"]] }
[[guest]]
name = "swapper"
max = "4G"
target = "1536M"
swap = "2G"
demand = { shape = "steps", points = [[0, "768M"], [36000, "2G"], [39600, "768M"],
                                      [122400, "2G"], [126000, "768M"], [208800, "2G"], [212400, "768M"]] }
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Metrics]:
    path = tmp_path_factory.mktemp("days") / "two-days.toml"
    path.write_text(TWO_DAYS)
    scenario = loads_scenario(TWO_DAYS, source=str(path))
    return {p: run_simulation(scenario, Job(str(path), p)).metrics for p in ("static", "autoballoon")}


@pytest.mark.parametrize("policy", ["static", "autoballoon"])
def test_the_days_sum_to_the_whole_run(runs: dict[str, Metrics], policy: str) -> None:
    m = runs[policy]
    assert [d.day for d in m.days] == [1, 2, 3]  # two days and a half: the last day is the half
    assert sum(d.oom_kills for d in m.days) == m.oom_kills
    assert sum(d.pressure_vm_s for d in m.days) == pytest.approx(m.pressure_vm_s)
    assert sum(d.host_overrun_s for d in m.days) == pytest.approx(m.host_overrun_s)
    assert sum(d.reclaimed_gib_h for d in m.days) == pytest.approx(m.reclaimed_gib_h, rel=1e-9)
    assert m.to_json()["days"] == [d.to_json() for d in m.days]


def test_a_guest_harmed_every_day_shows_it_every_day(runs: dict[str, Metrics]) -> None:
    static = runs["static"]
    assert [d.bursts for d in static.days] == ["first", "recurring", "recurring"]
    assert all(d.oom_kills > 0 for d in static.days)  # "nightly" is killed each night
    # "swapper" swaps for its hour each day (at most a step or two more, while swap pages back in).
    assert all(3600 <= d.pressure_vm_s <= 3600 + 200 for d in static.days)
    # Static reclaims what the boot targets left: the same each whole day, half of it the last half day.
    full, half = static.days[1].reclaimed_gib_h, static.days[2].reclaimed_gib_h
    assert static.days[0].reclaimed_gib_h == pytest.approx(full, rel=0.01)
    assert half == pytest.approx(full / 2, rel=0.02)
    assert full > 0


def test_a_run_of_a_day_has_no_breakdown(tmp_path: Path) -> None:
    text = TWO_DAYS.replace("duration = 216000", "duration = 86400")
    path = tmp_path / "one-day.toml"
    m = run_simulation(loads_scenario(text, source=str(path)), Job(str(path), "static")).metrics
    assert m.days == () and m.to_json()["days"] == []
    assert m.oom_kills > 0  # the totals are still there


def test_a_burst_is_first_at_a_new_time_of_day_and_recurring_at_a_known_one() -> None:
    step = 60.0
    rows = int(5 * DAY_S / step)
    onsets = np.zeros((rows, 2), dtype=np.bool_)

    def at(day: int, hour: float, guest: int) -> None:
        onsets[int((day * DAY_S + hour * 3600) / step), guest] = True

    at(0, 2.0, 0)  # day 1: guest 0 at 02:00, first
    at(1, 2.0, 0)  # day 2: recurring
    at(2, 2.0 + 4 / 60, 0)  # day 3: four minutes later, within the slot on either side: recurring
    at(2, 23.99, 1)  # ...but guest 1's first ever burst makes day 3 a first-burst day
    at(3, 0.05, 1)  # day 4: guest 1 again, across midnight (four minutes apart): recurring
    at(4, 4.0, 0)  # day 5: guest 0's burst moved to 04:00: first again
    assert burst_days(onsets, step, 5) == ["first", "recurring", "first", "recurring", "first"]
    assert burst_days(np.zeros((rows, 2), dtype=np.bool_), step, 5) == ["none"] * 5


def _day(day: int, bursts: str, kills: int = 0, pressure: float = 0.0) -> Day:
    return Day(day, bursts, 10.0, pressure, kills, 0.0)


def _with_days(*days: Day) -> Metrics:
    kills = sum(d.oom_kills for d in days)
    pressure = sum(d.pressure_vm_s for d in days)
    return Metrics("n", "autoballoon", 40.0, None, pressure, kills, 0.0, None, None, None, days=days)


def test_recurring_bursts_excuse_first_burst_kills_only() -> None:
    good = _with_days(_day(1, "first", 16, 900.0), _day(2, "recurring", 0, 90.0), _day(3, "none"))
    checks = {c.what: c for c in kill_checks("n", good)}
    assert "no OOM kills" not in checks  # replaced: nothing said the first night's burst was coming
    assert checks["no OOM kills but on first-burst days"].ok
    assert checks["day 2 (recurring): pressure <= 0.1 x day 1's"].ok
    # A kill on a quiet day, and a recurring day with more than a tenth of the first's pressure, fail.
    bad = _with_days(_day(1, "first", 16, 900.0), _day(2, "recurring", 0, 92.0), _day(3, "none", 1))
    checks = {c.what: c for c in kill_checks("n", bad)}
    assert not checks["no OOM kills but on first-burst days"].ok
    assert checks["no OOM kills but on first-burst days"].detail == "day 3: 1 (16 on first-burst days)"
    assert not checks["day 2 (recurring): pressure <= 0.1 x day 1's"].ok
    # A moved burst is a first one: the days after it are held to its pressure, not the first night's.
    moved = _with_days(_day(1, "first", 0, 900.0), _day(2, "first", 3, 50.0), _day(3, "recurring", 0, 20.0))
    checks = {c.what: c for c in kill_checks("n", moved)}
    assert checks["no OOM kills but on first-burst days"].ok
    assert not checks["day 3 (recurring): pressure <= 0.1 x day 2's"].ok
    # Without recurring bursts (or days) the plain bar holds.
    plain = replace(good, days=())
    assert [(c.what, c.ok) for c in kill_checks("n", plain)] == [("no OOM kills", False)]


def test_the_report_has_a_row_per_day_and_a_column_per_policy(runs: dict[str, Metrics]) -> None:
    table = days_table([runs["autoballoon"], runs["static"]])
    lines = table.splitlines()
    assert "| day | bursts | autoballoon | static |" in lines
    rows = [line for line in lines if line[:4] in ("| 1 ", "| 2 ", "| 3 ")]
    assert len(rows) == 3
    d = runs["static"].days[0]
    assert rows[0].endswith(f"| ⚠ {d.oom_kills} · {d.pressure_vm_s:.0f} · {d.reclaimed_gib_h:.1f} |")
    assert days_table([replace(runs["static"], days=())]) == ""
