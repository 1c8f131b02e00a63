"""The CLI against hostile input: names that try to drive the terminal, numbers too long to convert,
config files that are not text. Each is refused or shown plainly (exit 2 for a refusal), never a
traceback, and a refusal changes nothing."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoballoon.cli as cli_module
from autoballoon.backends.base import Backend
from autoballoon.cli.output import printable
from autoballoon.health import release_command, remedy
from tests.helpers.cli import run_cli
from tests.helpers.simhost import sim_backend

#: A VM name that clears the screen, turns text red, opens rich markup and reverses what follows it.
EVIL = "evil\x1b[2J\x1b[31m[bold]red\u202e;$(id)"
GUESTS = r"""
[[guest]]
name = "evil\u001b[2J\u001b[31m[bold]red\u202e;$(id)"
max = "2G"
demand = { shape = "constant", level = "300M" }
[[guest]]
name = "plain"
max = "2G"
demand = { shape = "constant", level = "300M" }
"""


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    b = sim_backend(GUESTS)
    monkeypatch.setattr(cli_module, "open_backend", lambda uri: b)
    yield b


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "sim:///test", *args)


def test_printable_escapes_controls_and_format_characters_only() -> None:
    assert printable("vm-é 日本") == "vm-é 日本"
    assert printable(EVIL) == "evil\\x1b[2J\\x1b[31m[bold]red\\u202e;$(id)"
    assert printable("a\nb\x00\x7f\x9b") == "a\\x0ab\\x00\\x7f\\x9b"


@pytest.mark.parametrize("args", [["list"], ["info", EVIL], ["policy", EVIL]])
def test_a_vm_name_cannot_drive_the_terminal(
    backend: Backend, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out  # shown, escaped
    assert "[bold]red" in out  # not swallowed as rich markup


def test_error_messages_escape_names_too(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "setmem", "no\x1b]0;pwned\x07", "512M")
    assert code == 2 and "\x1b" not in err and "\x07" not in err
    assert "evil\\x1b" in err  # the known VMs are listed, escaped


def test_the_remedy_and_release_commands_are_shell_quoted() -> None:
    for command in (remedy(EVIL), release_command(EVIL)):
        assert shlex.split(command)[2] == EVIL  # one argument, exactly the name
    assert remedy("win10") == "autoballoon balloon win10 --model none"


@pytest.mark.parametrize(
    "args",
    [
        ["setmem", "plain", "9" * 5000],
        ["setmem", "plain", "1." + "5" * 5000 + "G"],
        ["setmaxmem", "plain", "9" * 5000, "--config"],
        ["policy", "plain", "--min", "9" * 5000],
        ["policy", "plain", "--shares", "9" * 5000],
        ["policy", "plain", "--shares", "0"],
        ["policy", "plain", "--buffer", "nan"],
        ["policy", "plain", "--buffer", "1e999"],
        ["setvcpus", "plain", "9" * 5000],
        ["balloon", "plain", "--stats-period", "9" * 5000],
        ["run", "--once", "--no-http", "--interval", "nan"],
        ["run", "--once", "--no-http", "--interval", "1e12"],
    ],
    ids=lambda a: " ".join(x[:12] for x in a),
)
def test_numbers_out_of_any_range_exit_2_with_a_short_message(
    backend: Backend, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    before = backend.snapshot().guests, backend.get_policy("plain")
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err and len(err) < 600, err
    assert (backend.snapshot().guests, backend.get_policy("plain")) == before


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_bytes(b"interval = 2\n\xff\xfe\n")
    argv = [sys.executable, "-m", "autoballoon", "-c", "sim:///demo", "run", "--once", "--no-http"]
    proc = subprocess.run(
        [*argv, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "UTF-8" in proc.stderr
