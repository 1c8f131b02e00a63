"""The command line as people use it: ``--json`` on every command that prints data (it was on six of
thirteen), and shell completion through click."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autoballoon.cli import cli
from tests.cli_runner import run_cli

#: Commands that print no data of their own: the completion script is shell code.
NO_DATA = {"completion"}


@pytest.mark.parametrize("command", sorted(set(cli.commands) - NO_DATA))
def test_every_command_that_prints_data_has_json(command: str) -> None:
    params = {opt for p in cli.commands[command].params for opt in getattr(p, "opts", [])}
    assert "--json" in params, command


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (["setmem", "ci", "1G", "--live"], {"vm", "target_bytes", "scope"}),
        (["setmaxmem", "ci", "6G", "--config"], {"vm", "live", "next_boot", "message"}),
        (["setvcpus", "ci", "1", "--live"], {"vm", "live", "next_boot", "message"}),
        (["balloon", "ci"], {"vm", "model", "autodeflate", "free_page_reporting", "stats_period_s"}),
        (["balloon", "ci", "--autodeflate", "on"], {"vm", "live", "next_boot", "message"}),
    ],
)
def test_change_commands_print_json(
    capsys: pytest.CaptureFixture[str], args: list[str], keys: set[str]
) -> None:
    code, out, err = run_cli(capsys, "--connect", "sim:///demo", *args, "--json")
    assert code == 0, err
    assert keys <= set(json.loads(out))


def test_run_once_prints_its_plan_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "--connect", "sim:///demo", "run", "--once", "--dry-run", "--no-http", "--json"
    )
    assert code == 0, err
    plan = json.loads(out)
    assert {row["name"] for row in plan} == {"web", "db", "ci", "win10", "legacy", "stuck"}
    grown = [row for row in plan if row["reason"] == "demand"]
    assert grown and all(
        r["planned_target_bytes"] > r["target_bytes"] and r["applied"] is False for r in grown
    )
    assert all(r["rule"] and r["need_bytes"] <= r["want_bytes"] for r in grown)
    code, _, err = run_cli(capsys, "--connect", "sim:///demo", "run", "--json", "--no-http")
    assert code == 2 and "--once" in err


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_and_completing(capsys: pytest.CaptureFixture[str], shell: str) -> None:
    code, out, err = run_cli(capsys, "completion", shell)
    assert code == 0, err
    assert "_AUTOBALLOON_COMPLETE" in out


def _complete(words: str, cword: int) -> set[str]:
    """What bash's completion gets from the program for ``words`` with the cursor on word ``cword``."""
    env = {
        **os.environ,
        "_AUTOBALLOON_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    done = subprocess.run(
        [sys.executable, "-m", "autoballoon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(done.stdout.split())


def test_tab_completes_commands_and_options() -> None:
    assert {"plain,setmem", "plain,setmaxmem", "plain,setvcpus"} <= _complete("autoballoon se", 1)
    assert "plain,--wide" in _complete("autoballoon list --w", 2)
