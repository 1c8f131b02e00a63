"""The install story of a Debian or Proxmox host, as ``make install`` (scripts/install-host) does it, staged
under a DESTDIR: a virtualenv in /opt/autoballoon (Debian 12 refuses pip into the system Python), the
/usr/bin/autoballoon link the unit runs, the unit and the config; then the unit's own ExecStart line run
under the unit's paths writes its state file, and ``systemd-analyze verify`` takes the installed unit.

Before, the unit ran /usr/local/bin/autoballoon, which nothing put there on Debian 12, and the README's
``pip install 'autoballoon[libvirt]'`` found no distribution."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from autoballoon import __version__
from tests.helpers.systemd import verify

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-host"
PREFIX = "/opt/autoballoon"
#: The unit's paths, which the staged run maps under DESTDIR.
UNIT_DIRS = ("/etc/autoballoon", "/var/lib/autoballoon", "/var/log/autoballoon")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("destdir")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}  # the script's own choice, as make install
    done = subprocess.run(
        [str(SCRIPT)],
        env={**env, "DESTDIR": str(root)},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"autoballoon {__version__} in {PREFIX}" in done.stdout
    return root


def _service(unit: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    parser.read_string(unit.read_text())
    return parser["Service"]


def test_it_installs_the_program_unit_and_config(staged: Path) -> None:
    link = staged / "usr/bin/autoballoon"
    assert link.is_symlink() and os.readlink(link) == f"{PREFIX}/bin/autoballoon"
    program = staged / PREFIX.lstrip("/") / "bin/autoballoon"
    done = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and __version__ in done.stdout, done.stderr
    assert (staged / "etc/systemd/system/autoballoon.service").read_text() == (
        ROOT / "contrib/autoballoon.service"
    ).read_text()
    assert (staged / "etc/autoballoon/autoballoon.toml").exists()
    assert (staged / "var/lib/autoballoon").is_dir()


def test_it_runs_on_the_system_python_which_sees_debians_libvirt(staged: Path) -> None:
    """A ``python3`` first on root's PATH (pyenv, a hand-built one) does not see Debian's python3-libvirt:
    a virtualenv made from it gave a daemon that could not reach qemu:///system. The script takes
    /usr/bin/python3, whatever the PATH says."""
    venv = staged / PREFIX.lstrip("/")
    lines = (venv / "pyvenv.cfg").read_text().splitlines()
    cfg = dict(line.split(" = ", 1) for line in lines if " = " in line)
    assert cfg["home"] == "/usr/bin", cfg
    done = subprocess.run(
        [str(venv / "bin/python"), "-c", "import libvirt; print(libvirt.getVersion())"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and int(done.stdout) > 0, done.stderr


def test_the_units_execstart_runs_under_its_paths_and_writes_its_state(staged: Path) -> None:
    service = _service(staged / "etc/systemd/system/autoballoon.service")
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/bin/autoballoon"
    program = staged / PREFIX.lstrip("/") / "bin/autoballoon"  # what the link points to, staged

    def staged_path(arg: str) -> str:
        for d in UNIT_DIRS:
            if arg.startswith(d + "/") or arg == d:
                return str(staged / arg.lstrip("/"))
        return arg

    state = staged / "var/lib/autoballoon/state.json"
    journal = staged / "var/log/autoballoon/journal.jsonl"
    env = dict(kv.split("=", 1) for kv in shlex.split(service.get("Environment", "")))
    # No libvirtd here: the simulated host stands in for qemu:///system; everything else is the unit's.
    env["AUTOBALLOON_URI"] = "sim:///demo"
    cmd = [str(program), *(staged_path(a) for a in argv[1:])]
    cmd += ["--once", "--no-http", "--state", str(state), "--journal", str(journal)]
    done = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(state.read_text())  # the restart state was written where StateDirectory= allows
    assert journal.read_text().count("\n") >= 2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_installed_unit(staged: Path, tmp_path: Path) -> None:
    """verify refuses an ExecStart that does not exist: the staged program stands where /usr/bin is."""
    program = staged / PREFIX.lstrip("/") / "bin/autoballoon"
    text = (staged / "etc/systemd/system/autoballoon.service").read_text()
    unit = tmp_path / "autoballoon.service"
    unit.write_text(text.replace("/usr/bin/autoballoon", str(program)))
    verify(unit)


def test_the_readme_starts_operators_with_install_on_a_host() -> None:
    """The first section is how to install it on a host, in three commands, and the README says what
    ``make test`` does to a machine as root (it installed libvirt, Prometheus, Chromium and a compiler and
    changed /dev/kvm's owner without saying so)."""
    readme = (ROOT / "README.md").read_text()
    sections = [line for line in readme.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Install on a host"
    first = readme.split("## Install on a host", 1)[1].split("\n## ", 1)[0]
    block = first.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 3 and any("make install" in c for c in commands)
    assert "pip install 'autoballoon[" not in readme  # not on PyPI: no such distribution
    setup = (ROOT / "scripts" / "setup-rig").read_text()
    packages = setup.split("PKGS=(", 1)[1].split(")", 1)[0].split()
    tested = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    for package in packages:
        assert f"`{package}`" in tested, package
    assert "/dev/kvm" in tested
