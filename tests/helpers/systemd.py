"""``systemd-analyze verify`` on a unit file, as the unit tests and the install test run it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def verify(unit: Path) -> None:
    """Assert that systemd reads ``unit`` without a complaint (verify also refuses a missing ExecStart)."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Unknown key" not in done.stderr and "Unknown section" not in done.stderr, done.stderr
