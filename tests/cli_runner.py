"""Run the ``autoballoon`` command in this process, as the console entry point would, for tests."""

from __future__ import annotations

import pytest

from autoballoon.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``autoballoon ARGS...``: its exit code (0 when it returns), stdout and stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
