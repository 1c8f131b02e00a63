"""Hand tools that could harm: ``setmem`` below what the guest uses needs ``--force`` (``setmem ci 200M``
was accepted while the guest used 658 MiB), and the README's hand floor is the code's (it said 64 MiB
while the command line refuses anything below 128 MiB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.constraints import MIN_TARGET_BYTES
from autoballoon.tunables import DEFAULT_TUNABLES
from autoballoon.units import MiB
from tests.cli_runner import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_setmem_below_what_the_guest_uses_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--connect", "sim:///demo", "setmem", "ci", "200M", "--live")
    assert code == 2, out
    assert "uses now" in err and "--force" in err and "nothing was changed" in err


def test_force_sets_it_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--connect", "sim:///demo", "setmem", "ci", "200M", "--live", "--force")
    assert code == 0, err
    assert "balloon target set to 200MiB" in out
    assert "warning" in err and "swap or OOM-kill" in err


def test_a_target_above_use_needs_no_force(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--connect", "sim:///demo", "setmem", "ci", "1G", "--live")
    assert code == 0, err
    assert err == ""


def test_the_readme_gives_the_codes_floors() -> None:
    row = next(line for line in README.read_text().splitlines() if line.startswith("| **floor**"))
    assert f"by hand never below {MIN_TARGET_BYTES // MiB} MiB" in row
    assert f"`global_min` ({DEFAULT_TUNABLES.global_min_bytes // MiB} MiB)" in row
