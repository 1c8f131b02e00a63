"""Real-guest scenario files: the shipped ones load, and every mistake is refused naming file, field and
the accepted forms, before any guest boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.real.scenario import load_real_scenario, parse_command
from autoballoon.units import MiB

REAL = Path(__file__).resolve().parent.parent / "scenarios" / "real"

GOOD = """
[host]
budget = "800M"
[run]
duration = 80
[[guest]]
name = "a"
workload = [[0, "alloc 64M"], [45, "ramp 160M 10M/s"], [60, "free 32M"], [70, "free"]]
[[guest]]
name = "b"
memory = "1G"
autodeflate = true
swap = "256M"
workload = [[10, "alloc 25%"]]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.toml"
    path.write_text(text)
    return path


def test_every_shipped_real_scenario_loads_and_has_a_workload() -> None:
    paths = sorted(REAL.glob("*.toml"))
    assert len(paths) >= 8
    for path in paths:
        scenario = load_real_scenario(path)
        assert scenario.budget > 0 and scenario.guests
        assert any(c.grows for g in scenario.guests for c in g.workload), path


def test_a_good_file_becomes_bytes_and_seconds(tmp_path: Path) -> None:
    s = load_real_scenario(write(tmp_path, GOOD))
    a, b = s.guests
    assert s.name == "w" and s.budget == 800 * MiB and s.duration_s == 80
    assert [(c.at_s, c.kind, c.size, c.rate) for c in a.workload] == [
        (0, "alloc", 64 * MiB, 0),
        (45, "ramp", 160 * MiB, 10 * MiB),
        (60, "free", 32 * MiB, 0),
        (70, "free", None, 0),
    ]
    assert (b.memory, b.autodeflate, b.swap) == (1024 * MiB, True, 256 * MiB)
    assert b.workload[0].size == 256 * MiB  # 25 % of its own memory
    assert a.memory == 512 * MiB and a.swap == 0 and not a.autodeflate


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ('budget = "800M"', "budget = nan", ("[host] field 'budget'",)),
        ('budget = "800M"', 'budget = "0"', ("'budget'", "above 0")),
        ("duration = 80", "duration = inf", ("[run] field 'duration'", "seconds")),
        ("duration = 80", "duration = nan", ("[run] field 'duration'",)),
        ('name = "a"', 'name = "a b"', ("field 'name'", "letters")),
        ('name = "b"', 'name = "a"', ("field 'name'", "no other guest")),
        ('memory = "1G"', 'memory = "64M"', ("'b' field 'memory'", "128M")),
        ('swap = "256M"', 'swap = "8G"', ("'b' field 'swap'",)),
        ("autodeflate = true", 'autodeflate = "yes"', ("'autodeflate'", "true or false")),
        ('[[0, "alloc 64M"]', '[[nan, "alloc 64M"]', ("'a' field 'workload' entry 1", "start second")),
        ('[45, "ramp', '[inf, "ramp', ("entry 2",)),
        ('[45, "ramp', '[90, "ramp', ("entry 2", "below the run's 80 s")),
        ('[60, "free 32M"]', '[30, "free 32M"]', ("entry 3", "not before the previous")),
        ("ramp 160M 10M/s", "ramp 160M 10M", ("entry 2", "ending in /s")),
        ("ramp 160M 10M/s", "ramp 160M 100K/s", ("entry 2", "at least 1M/s")),
        ("alloc 64M", "grab 64M", ("entry 1", "alloc SIZE")),
        ("alloc 64M", "alloc", ("entry 1", "alloc SIZE")),
        ("alloc 64M", "alloc 0", ("entry 1", "above 0")),
        ("alloc 25%", "alloc 250%", ("entry 1", "at most 100")),
        ("alloc 25%", "alloc nan%", ("entry 1", "at most 100")),
        ("alloc 64M", "alloc 64Q", ("entry 1", "unknown unit")),
        ('name = "b"', 'name = "b"\ncolour = "red"', ("'colour'", "memory")),
    ],
)
def test_mistakes_are_refused_naming_the_file_and_field(
    tmp_path: Path, old: str, new: str, names: tuple[str, ...]
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(InvalidValueError) as err:
        load_real_scenario(path)
    message = str(err.value)
    assert str(path) in message
    for part in names:
        assert part in message, message


def test_a_missing_section_and_bad_toml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match=r"'run'.*required"):
        load_real_scenario(write(tmp_path, GOOD.replace("[run]\nduration = 80\n", "")))
    with pytest.raises(InvalidValueError, match="valid TOML"):
        load_real_scenario(write(tmp_path, "[host"))
    with pytest.raises(InvalidValueError, match="readable"):
        load_real_scenario(tmp_path / "absent.toml")


def test_command_sizes_round_to_what_was_written() -> None:
    c = parse_command(1.5, "ramp 1G 40M/s", 512 * MiB, "w")
    assert (c.kind, c.size, c.rate, c.grows) == ("ramp", 1024 * MiB, 40 * MiB, True)
    assert parse_command(0, "free", 512 * MiB, "w").size is None
    assert not parse_command(0, "free", 512 * MiB, "w").grows
