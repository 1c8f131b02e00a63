"""One unit for a buffer on every face: the same text means the same buffer on the command line, in the
config file, in an API body and in a scenario file. ``policy db --buffer 0.2`` printed "buffer 0.2%"
while ``buffer = 0.2`` in the config meant 20 % (and ``buffer = 20`` there was refused): a value copied
from the config to the command line was off by a factor of 100."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from autoballoon.config import parse_config
from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.server import payload
from autoballoon.sim.scenario import loads_scenario
from tests.cli_runner import run_cli


def _scenario(value: str) -> float | None:
    text = f"""
[host]
ram = "16G"
[run]
duration = 60
[[guest]]
name = "g"
max = "4G"
policy = {{ buffer = {value} }}
demand = {{ shape = "constant", level = "1G" }}
"""
    return loads_scenario(text, source="<test>").guests[0].policy.buffer


def _config(value: str) -> float | None:
    import tomllib

    return parse_config(tomllib.loads(f"[defaults]\nbuffer = {value}\n")).defaults.buffer


def _api(value: str) -> float | None:
    return payload.parse(payload.PolicyBody, f'{{"buffer": {value}}}'.encode()).over(GuestPolicy()).buffer


FACES: dict[str, Callable[[str], float | None]] = {"config": _config, "api": _api, "scenario": _scenario}


@pytest.mark.parametrize("face", sorted(FACES))
@pytest.mark.parametrize(("value", "fraction"), [("0.2", 0.2), ('"20%"', 0.2), ("1", 1.0), ('"150%"', 1.5)])
def test_the_same_buffer_everywhere(face: str, value: str, fraction: float) -> None:
    assert FACES[face](value) == pytest.approx(fraction)


@pytest.mark.parametrize("face", sorted(FACES))
@pytest.mark.parametrize("value", ["20", "1.5", '"20"', "-0.1"])
def test_a_bare_number_above_one_is_refused_everywhere(face: str, value: str) -> None:
    with pytest.raises((InvalidValueError, ValueError)) as refused:
        FACES[face](value)
    assert "fraction from 0 to 1" in str(refused.value) or "percentage" in str(refused.value)


@pytest.mark.parametrize(
    ("arg", "shown"), [("0.2", "buffer 20%"), ("20%", "buffer 20%"), ("0.35", "buffer 35%")]
)
def test_the_command_line_takes_the_configs_forms(
    capsys: pytest.CaptureFixture[str], arg: str, shown: str
) -> None:
    code, out, err = run_cli(capsys, "--connect", "sim:///demo", "policy", "db", "--buffer", arg)
    assert code == 0, err
    assert shown in out
    code, out, err = run_cli(capsys, "--connect", "sim:///demo", "policy", "db", "--buffer", arg, "--json")
    assert json.loads(out)["buffer"] == pytest.approx(float(shown.split()[1].rstrip("%")) / 100)


def test_the_command_line_refuses_twenty(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--connect", "sim:///demo", "policy", "db", "--buffer", "20")
    assert code == 2
    assert "20%" in err and "fraction" in err  # it says how to write what was probably meant
