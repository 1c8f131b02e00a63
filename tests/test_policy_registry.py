"""One list of policies: :data:`autoballoon.policy.POLICIES`, read by the daemon, the evaluation (which adds
only its oracle) and the real-guest benches. A policy added there and not to one of them, or one of them
knowing a policy the registry lacks, fails here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from autoballoon.cli import cli
from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.policies import CONTENDERS, ORACLE, DaemonPolicy, Oracle, factory
from autoballoon.evaluate.production.runner import FPR_ONLY, PLAYED
from autoballoon.evaluate.report import COLORS
from autoballoon.evaluate.summary import DEFAULT_POLICY, REFERENCES
from autoballoon.policy import POLICIES, create_policy, parse_policies
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import loads_scenario
from autoballoon.tunables import Tunables

ROOT = Path(__file__).resolve().parent.parent

_ONE_GUEST = """
[host]
ram = "8G"
[run]
duration = 60
step = 1
[[guest]]
name = "vm"
max = "2G"
demand = { shape = "constant", level = "512M" }
"""

#: The only literals allowed to list policy names, and why: the registry itself, the roles the acceptance
#: bars give to some of its policies, and the plots' colours (checked below to cover every contender).
ALLOWED = {
    ("src/autoballoon/policy/__init__.py", "POLICIES"),
    ("src/autoballoon/evaluate/summary.py", "REFERENCES"),
    ("src/autoballoon/evaluate/report.py", "COLORS"),
}


def test_each_registered_policy_carries_the_name_it_is_registered_under() -> None:
    for name, build in POLICIES.items():
        assert build(Tunables()).name == name
        assert type(create_policy(name, Tunables())) is type(build(Tunables()))


def test_an_unknown_policy_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidValueError, match=r"one of autoballoon, mom, proxmox, static$"):
        create_policy("xen", Tunables())
    with pytest.raises(InvalidValueError, match=r"one of autoballoon, mom, proxmox, static, oracle$"):
        factory("xen")
    with pytest.raises(InvalidValueError, match="static"):
        parse_policies("mom,xen")


def test_the_evaluation_runs_every_registered_policy_as_the_daemon_does_and_the_oracle_besides() -> None:
    sim = Simulation(loads_scenario(_ONE_GUEST))
    daemon: list[str] = []
    others: list[str] = []
    for name in parse_policies("all", CONTENDERS):
        contender = factory(name)(sim)
        assert contender.name == name
        if isinstance(contender, DaemonPolicy):
            assert type(contender.policy) is type(POLICIES[name](Tunables()))
            daemon.append(name)
        else:
            assert isinstance(contender, Oracle)
            others.append(name)
    assert daemon == list(POLICIES)
    assert others == [ORACLE]


def test_the_daemon_and_the_benches_offer_exactly_the_registered_policies() -> None:
    run = cli.commands["run"]
    choice = next(p.type for p in run.params if p.name == "policy_name")
    assert isinstance(choice, click.Choice)
    assert tuple(choice.choices) == tuple(POLICIES)
    assert parse_policies("all") == tuple(POLICIES)  # the real bench's --policies
    assert tuple(p for p in PLAYED if p != FPR_ONLY) == tuple(POLICIES)
    assert set(COLORS) == set(CONTENDERS)
    assert {DEFAULT_POLICY, *REFERENCES} <= set(POLICIES)


def _lists_of_names(tree: ast.AST, names: frozenset[str]) -> Iterator[tuple[str, int]]:
    """(the variable assigned, line) of every tuple, list, set or dict literal naming two policies."""
    assigned: dict[ast.AST, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            label = ",".join(ast.unparse(t) for t in targets)
            for inner in ast.walk(node.value):
                assigned.setdefault(inner, label)
    for node in ast.walk(tree):
        items: list[ast.expr | None]
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = list(node.elts)
        elif isinstance(node, ast.Dict):
            items = list(node.keys)
        else:
            continue
        named = {i.value for i in items if isinstance(i, ast.Constant) and i.value in names}
        if len(named) >= 2:
            yield assigned.get(node, ""), node.lineno


def test_no_module_keeps_a_list_of_policy_names_of_its_own() -> None:
    names = frozenset((*POLICIES, ORACLE))
    found = set()
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]):
        rel = str(path.relative_to(ROOT))
        for label, line in _lists_of_names(ast.parse(path.read_text(), rel), names):
            if (rel, label) not in ALLOWED:
                found.add(f"{rel}:{line} {label}")
    assert not found, "policy names listed outside autoballoon.policy.POLICIES"
    assert list(_lists_of_names(ast.parse('X = ("mom", "static")'), names)) == [("X", 1)]  # it sees one
