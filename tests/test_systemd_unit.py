"""``contrib/autoballoon.service`` checked against what the daemon writes: under ``ProtectSystem=strict``
every path the daemon saves to by default must be one systemd leaves writable, or each save fails with
EROFS and a restart forgets its quarantines. ``systemd-analyze verify`` checks the unit's syntax where it
is installed."""

from __future__ import annotations

import configparser
import shutil
from pathlib import Path, PurePosixPath

import pytest

from autoballoon.config import DEFAULT_CONFIG_PATH
from autoballoon.state import DEFAULT_STATE_PATH
from tests.helpers.systemd import verify

UNIT = Path(__file__).resolve().parents[1] / "contrib" / "autoballoon.service"
EXAMPLE_JOURNAL = PurePosixPath("/var/log/autoballoon/journal.jsonl")
#: Where scripts/install-host links the program (the unit's ExecStart runs it).
INSTALLED_PROGRAM = "/usr/bin/autoballoon"

#: Where systemd puts each ``*Directory=`` of a system unit (systemd.exec(5), "RuntimeDirectory=").
_DIRECTORY_ROOTS = {
    "StateDirectory": "/var/lib",
    "LogsDirectory": "/var/log",
    "CacheDirectory": "/var/cache",
    "RuntimeDirectory": "/run",
}


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def _writable(service: configparser.SectionProxy) -> list[PurePosixPath]:
    """The paths ``ProtectSystem=strict`` leaves writable for this unit."""
    paths = [PurePosixPath(p) for p in service.get("ReadWritePaths", "").split()]
    for key, root in _DIRECTORY_ROOTS.items():
        paths += [PurePosixPath(root) / d for d in service.get(key, "").split()]
    return paths


def test_unit_keeps_its_hardening() -> None:
    service = _service()
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"


@pytest.mark.parametrize("path", [DEFAULT_STATE_PATH, EXAMPLE_JOURNAL], ids=["state", "journal"])
def test_daemon_can_write_its_default_paths(path: Path) -> None:
    writable = _writable(_service())
    assert any(PurePosixPath(path).is_relative_to(w) for w in writable), (path, writable)


def test_unit_declares_its_directories() -> None:
    service = _service()
    assert service["StateDirectory"] == DEFAULT_STATE_PATH.parent.name
    assert service["ConfigurationDirectory"] == DEFAULT_CONFIG_PATH.parent.name
    assert str(DEFAULT_CONFIG_PATH) in service["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as systemd reads it, with ExecStart pointed at a program that exists here (verify
    refuses a missing executable, and the package installs autoballoon elsewhere)."""
    text = UNIT.read_text().replace(INSTALLED_PROGRAM, shutil.which("true") or "/bin/true")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    verify(unit)


def test_systemctl_reload_sends_the_daemon_sighup() -> None:
    """The daemon reloads its config and reopens its journal on SIGHUP; ``systemctl reload`` (and a
    logrotate postrotate that calls it) must send exactly that."""
    assert _service()["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_the_unit_runs_the_installed_program() -> None:
    """It ran /usr/local/bin/autoballoon, which Debian 12 refuses to install system-wide with pip;
    scripts/install-host links /usr/bin/autoballoon to its own virtualenv."""
    assert _service()["ExecStart"].split()[0] == INSTALLED_PROGRAM
