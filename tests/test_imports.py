"""The import direction that ``docs/architecture.md`` documents, held for every module under ``src/``.

Each module's imports are read from its source (``ast``, so an import inside a function or under
``TYPE_CHECKING`` counts too: it is a dependency all the same). A top-level unit (``model``, ``policy``,
``backends``...) sits on one layer of :data:`LAYERS`; it may import its own modules and those of lower
layers only, never a unit of its own layer or of a higher one. On top of the layers, :data:`ONLY` names
the few units the backends may use at all: a backend converts at its edge and knows no rule of the
policy. The same table is drawn in ``docs/architecture.md``; a change to one is a change to the other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "autoballoon"

#: The layers, lowest first. cli/server -> controller -> policy/safety -> model; backends -> model.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("units", "text"),
    ("constraints",),
    ("model", "tunables", "clock"),
    ("safety", "health", "reasons", "hostinfo", "state", "sim"),
    ("policy", "backends", "journal", "views", "rig"),
    ("saved", "ops", "config"),
    ("controller",),
    ("server", "evaluate"),
    ("cli",),
    ("__main__",),
)
#: Units that may import only the units listed (besides their own modules).
ONLY: dict[str, frozenset[str]] = {
    "backends": frozenset(
        {"errors", "units", "text", "constraints", "model", "tunables", "clock", "hostinfo", "sim"}
    ),
}
#: Imports known to run against the direction, (module, imported module): why it is still there. Their
#: module's test is expected to fail, strictly: once the import is gone, drop the entry.
KNOWN: dict[tuple[str, str], str] = {}


def _layer_of() -> dict[str, int]:
    return {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(source: str, module: str, *, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every module ``source`` (the text of ``module``) imports, with its line; ``from autoballoon import
    x`` names the submodule ``x`` when there is one."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (SRC / Path(*sub.split("."))).is_dir() or (
                    SRC / Path(*sub.split("."))
                ).with_suffix(".py").is_file()
                yield (sub if is_module else base), node.lineno


def _unit(module: str) -> str | None:
    """The top-level unit of an ``autoballoon`` module (None: the package itself, or another package)."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def _modules() -> list[Path]:
    return sorted((SRC / PACKAGE).rglob("*.py"))


def against_the_direction(
    source: str, module: str, *, is_package: bool = False
) -> list[tuple[str, str, str]]:
    """(importing module:line, imported module, the rule it breaks) for each import in ``source``, the
    text of ``module``, that runs against the documented direction."""
    layer = _layer_of()
    unit = _unit(module)
    if unit is None:
        return []
    found: list[tuple[str, str, str]] = []
    for target, line in _imported(source, module, is_package=is_package):
        other = _unit(target)
        if other is None or other == unit:
            continue
        where = f"{module}:{line}"
        if unit not in layer or other not in layer:
            found.append((where, target, f"{unit if unit not in layer else other!r} is on no layer"))
        elif layer[other] >= layer[unit]:
            found.append(
                (where, target, f"{unit} (layer {layer[unit]}) imports {other} (layer {layer[other]})")
            )
        elif unit in ONLY and other not in ONLY[unit]:
            found.append((where, target, f"{unit} may import only {', '.join(sorted(ONLY[unit]))}"))
    return found


def _of(path: Path) -> list[tuple[str, str, str]]:
    text = path.read_text(encoding="utf-8")
    return against_the_direction(text, _module_name(path), is_package=path.name == "__init__.py")


def _cases() -> list[object]:
    """Every module; one with a :data:`KNOWN` wrong import is expected to fail (strictly: once the import
    is gone the test fails until the entry is dropped)."""
    cases: list[object] = []
    for path in _modules():
        why = [reason for (module, _), reason in KNOWN.items() if module == _module_name(path)]
        marks = [pytest.mark.xfail(reason="; ".join(why), strict=True)] if why else []
        cases.append(pytest.param(path, id=_module_name(path), marks=marks))
    return cases


@pytest.mark.parametrize("path", _cases())
def test_every_import_runs_the_documented_way(path: Path) -> None:
    wrong = _of(path)
    assert not wrong, "\n".join(f"{where} imports {target}: {rule}" for where, target, rule in wrong)


def test_every_unit_is_on_a_layer() -> None:
    units = {p.stem for p in (SRC / PACKAGE).iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    units |= {p.name for p in (SRC / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    assert units == set(_layer_of()), "place each unit on a layer of LAYERS"


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        (
            "autoballoon.policy.fake",
            "from autoballoon.backends import sim",
            "policy (layer 5) imports backends",
        ),
        ("autoballoon.policy.fake", "import autoballoon.controller", "policy (layer 5) imports controller"),
        ("autoballoon.model", "from autoballoon import safety", "model (layer 3) imports safety"),
        ("autoballoon.backends.fake", "from autoballoon.safety import limits", "backends may import only"),
        ("autoballoon.backends.libvirt.xml", "from autoballoon.ops import check_policy", "imports ops"),
        (
            "autoballoon.evaluate.real.fake",
            "from ...cli.output import emit_json",
            "evaluate (layer 8) imports cli",
        ),
        ("autoballoon.controller", "def f():\n    from autoballoon.server import api", "imports server"),
    ],
)
def test_the_checker_refuses_an_import_against_the_direction(module: str, source: str, rule: str) -> None:
    """The checker is not blind: the imports the architecture forbids (the policy reaching for a backend,
    a backend for the policy's rules, the model for the guards, the real-guest evaluation for the CLI, an
    import hidden in a function) are each refused, naming the rule."""
    found = against_the_direction(source, module)
    assert len(found) == 1 and rule in found[0][2], found
    assert against_the_direction("from autoballoon.model import Plan\nfrom . import fill", module) == []
