"""Run the real ``autoballoon`` command line as a subprocess, the way an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

CLI_TIMEOUT_S = 60.0


def run_cli(*args: str, uri: str = "qemu:///system", check: bool = False) -> subprocess.CompletedProcess[str]:
    """``autoballoon --connect URI ARGS...``; the result carries returncode, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "autoballoon", "--connect", uri, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"autoballoon {' '.join(args)} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done


def cli_json(*args: str, uri: str = "qemu:///system") -> Any:
    """Parsed ``--json`` output of a command that must succeed."""
    return json.loads(run_cli(*args, "--json", uri=uri, check=True).stdout)
