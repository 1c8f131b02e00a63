"""``list`` as people use it: in an 80-column terminal every cell, the VM name above all, is shown whole.
It needed about 150 columns, and at 80 every cell became an ellipsis; now the rest is under ``--wide``."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.cli import output
from tests.cli_runner import run_cli

LONG_NAME = "database-primary-01"
SCENARIO = f"""
[host]
ram = "64G"
[run]
duration = 600
[[guest]]
name = "{LONG_NAME}"
max = "12G"
target = "6G"
demand = {{ shape = "constant", level = "3G" }}
[[guest]]
name = "ci"
max = "4G"
target = "1536M"
stats = false
demand = {{ shape = "constant", level = "700M" }}
"""


@pytest.fixture
def terminal_80(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's console as an 80-column terminal would size it."""
    monkeypatch.setattr(output, "PIPE_WIDTH", 80)


@pytest.mark.usefixtures("terminal_80")
@pytest.mark.parametrize("uri", ["sim:///demo", "scenario"])
def test_list_fits_80_columns_without_ellipses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, uri: str
) -> None:
    if uri == "scenario":
        path = tmp_path / "long.toml"
        path.write_text(SCENARIO)
        uri = f"sim://{path}"
    code, out, err = run_cli(capsys, "--connect", uri, "list", "--daemon", "http://127.0.0.1:9")
    assert code == 0, err
    # The table, not the sentences under it (a reason per VM that is not managed, wrapped by the terminal).
    table = [line for line in out.splitlines() if line.strip() and ": " not in line]
    assert all(len(line) <= 80 for line in table), max(table, key=len)
    assert "…" not in out
    assert table[0].split() == ["NAME", "MAX", "TARGET", "ACTUAL", "USED", "AVAIL", "STATUS"]
    if "long" in uri:
        assert any(line.startswith(LONG_NAME + " ") for line in table)
        assert any("no-stats" in line for line in table)


def test_wide_shows_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "--connect", "sim:///demo", "list", "--wide", "--daemon", "http://127.0.0.1:9"
    )
    assert code == 0, err
    header = out.splitlines()[0]
    for column in ("STATE", "RSS", "STATS", "BALLOON", "VCPU", "POLICY", "STATUS"):
        assert column in header
    assert "min 1.0 GiB, shares 2000" in out
