"""Every package ``src/`` imports is declared in ``pyproject.toml``, and the ones whose internals it
subclasses are bounded above.

A package that only comes in as another's dependency can disappear or change under us when that other
package changes its own requirements: the server subclasses h11-based protocol code from uvicorn and
imports ``h11`` itself, so both must be named, and uvicorn (whose ``h11_impl`` module is not public API)
must be bounded to the versions it was tried with.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "autoballoon"

#: Import names whose distribution has another name.
DISTRIBUTION_OF = {
    "prometheus_client": "prometheus-client",
    "qemu": "qemu.qmp",
    "libvirt": "libvirt-python",
    "libvirt_qemu": "libvirt-python",
    "yaml": "pyyaml",
}
#: Imports not declared on purpose, and why.
UNDECLARED = {
    "_typeshed": "exists only for the type checker (imported under TYPE_CHECKING)",
    "pydantic_core": "pydantic pins the exact pydantic-core it is built with; a second bound could only "
    "conflict with it",
}
#: Distributions whose internals ``src/`` reaches into, so a new release must be taken on purpose.
BOUNDED_ABOVE = ("uvicorn",)


def requirements() -> dict[str, Requirement]:
    """Every requirement of the project, its extras' included, by canonical distribution name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    lines = [*project["dependencies"], *(line for extra in extras for line in extra)]
    found: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        found[canonicalize_name(req.name)] = req
    return found


def third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``src/`` that are neither ours nor the standard
    library's, with the files importing each."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "autoballoon" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    declared = requirements()
    missing = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if module not in UNDECLARED and canonicalize_name(DISTRIBUTION_OF.get(module, module)) not in declared
    }
    assert missing == {}


def test_h11_is_imported_and_declared() -> None:
    # The server's protocol subclass speaks h11's events itself; this guards the finding above from
    # passing only because the import moved out of sight.
    assert "h11" in third_party_imports()
    assert "h11" in requirements()


def test_packages_whose_internals_are_used_are_bounded_and_installed_within() -> None:
    declared = requirements()
    for name in BOUNDED_ABOVE:
        spec = declared[name].specifier
        assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"{name} has no upper bound"
        installed = metadata.version(name)
        assert spec.contains(installed, prereleases=True), f"{name} {installed} is outside {spec}"
