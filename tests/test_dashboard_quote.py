"""The dashboard's remedy command, run through Node: the operator pastes it into a shell, so the VM name in
it must be quoted exactly as the daemon quotes the commands it logs (``shlex.quote``)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from autoballoon.health import remedy
from tests.needs import missing

APP_JS = Path(__file__).resolve().parents[1] / "src" / "autoballoon" / "server" / "static" / "app.js"
#: The names a hostile probe used: one that runs ``touch PWNED`` when pasted unquoted, and its kin.
HOSTILE = [
    "w;touch${IFS}PWNED;x",
    "$(id)",
    "`id`",
    "a'b",
    "a b",
    "",
    "-rf",
    "win10",
    "évé",
    "x\ny",
    "''",
]


def _functions(*names: str) -> str:
    """The source of the named top-level functions of app.js (it draws a page, so it is not loaded whole)."""
    text = APP_JS.read_text()
    found = []
    for name in names:
        match = re.search(rf"^function {name}\(.*?^\}}$", text, re.MULTILINE | re.DOTALL)
        assert match is not None, f"app.js has no function {name}"
        found.append(match.group(0))
    return "\n".join(found)


def _dashboard_remedies(names: list[str]) -> list[str]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        missing("node is not installed (apt-get install nodejs)")
    script = (
        _functions("shellQuote", "remedyCommand")
        + "\nconst names = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        + "\nprocess.stdout.write(JSON.stringify(names.map(remedyCommand)));"
    )
    done = subprocess.run(
        [node, "-e", script], input=json.dumps(names), capture_output=True, text=True, timeout=60, check=True
    )
    result: list[str] = json.loads(done.stdout)
    return result


def test_the_dashboard_quotes_hostile_names_as_the_daemon_does() -> None:
    shown = _dashboard_remedies(HOSTILE)
    assert shown == [remedy(name) for name in HOSTILE]
    for name, command in zip(HOSTILE, shown, strict=True):
        assert shlex.split(command) == ["autoballoon", "balloon", name, "--model", "none"]


def test_the_pasted_command_runs_nothing_but_autoballoon(tmp_path: Path) -> None:
    """Pasted into a real shell with ``autoballoon`` replaced by ``printf``: no file appears, and the VM
    name comes through as one argument, unchanged."""
    (command,) = _dashboard_remedies(["w;touch${IFS}PWNED;x"])
    shell = command.replace("autoballoon balloon ", "printf %s ", 1).replace(" --model none", "")
    done = subprocess.run(["sh", "-c", shell], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert not (tmp_path / "PWNED").exists()
    assert done.stdout == "w;touch${IFS}PWNED;x"


@settings(max_examples=10, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=50))
def test_the_dashboard_quotes_any_name_as_the_daemon_does(names: list[str]) -> None:
    assert _dashboard_remedies(names) == [remedy(name) for name in names]
