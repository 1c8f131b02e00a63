"""Running the ``autoballoon`` command in the test process, as a user would from a shell."""

from __future__ import annotations

import pytest

from autoballoon.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], uri: str, *args: str) -> tuple[int, str, str]:
    """``autoballoon --connect URI ARGS...``: (exit code, stdout, stderr). The caller decides which backend
    the URI opens (tests patch ``autoballoon.cli.open_backend``)."""
    try:
        main(["--connect", uri, *args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
