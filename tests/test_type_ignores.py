"""Every ``type: ignore`` in the type-checked code names its error code and says why.

mypy runs with ``--strict`` on the files that ``[tool.mypy] files`` in pyproject.toml lists; it refuses an
unused ignore and one without an error code, but not one without a reason. An ignore is a place where the
checker was overruled, so the next reader needs the reason on the same line:
``# type: ignore[override]  # uvicorn's own signature``.
"""

from __future__ import annotations

import io
import re
import tokenize
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORE = re.compile(r"type:\s*ignore\b")
#: ``# type: ignore[code, ...]`` then a second comment with some words in it.
EXPLAINED = re.compile(r"#\s*type:\s*ignore\[[\w-]+(?:\s*,\s*[\w-]+)*\]\s*#\s*\w.*")


def unexplained_ignores(source: str, name: str = "<source>") -> list[str]:
    """``file:line: comment`` for each ``type: ignore`` comment in ``source`` without a code or a reason.

    Only comments count (tokenize finds them), so a string that mentions the words is not an ignore."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        comment = token.type == tokenize.COMMENT
        if comment and IGNORE.search(token.string) and not EXPLAINED.search(token.string):
            found.append(f"{name}:{token.start[0]}: {token.string}")
    return found


def checked_files() -> list[Path]:
    """The Python files mypy checks: those under ``[tool.mypy] files``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    roots = [ROOT / entry for entry in config["tool"]["mypy"]["files"]]
    return sorted(p for root in roots for p in ([root] if root.is_file() else root.rglob("*.py")))


@pytest.mark.parametrize(
    "line",
    [
        "x = f()  # type: ignore\n",
        "x = f()  # type: ignore[arg-type]\n",
        "x = f()  # type: ignore[arg-type]  #\n",
        "x = f()  # type:ignore  # no code\n",
        "x = f()  # noqa: E501  # type: ignore[misc]\n",
        "# type: ignore\n",
    ],
)
def test_an_ignore_without_a_code_and_a_reason_is_found(line: str) -> None:
    found = unexplained_ignores(line, "m.py")
    assert [problem.partition(": ")[0] for problem in found] == ["m.py:1"]


@pytest.mark.parametrize(
    "source",
    [
        "x = f()  # type: ignore[arg-type]  # values parsed as their fields' types above\n",
        "x = f()  # type: ignore[override, misc]  # as uvicorn's H11Protocol\n",
        'doc = "a # type: ignore in a string is not a comment"\n',
        "x = 1  # typed: ignored words are not an ignore\n",
    ],
)
def test_an_explained_ignore_or_a_mention_passes(source: str) -> None:
    assert unexplained_ignores(source) == []


def test_the_checked_files_include_every_package_module() -> None:
    files = checked_files()
    assert ROOT / "src" / "autoballoon" / "__init__.py" in files
    assert len(files) == len(list((ROOT / "src").rglob("*.py")))


def test_every_ignore_in_the_checked_code_is_explained() -> None:
    found = [
        problem
        for path in checked_files()
        for problem in unexplained_ignores(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == [], "write `# type: ignore[code]  # why` on the line:\n" + "\n".join(found)
