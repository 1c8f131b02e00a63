"""Fuzzing the edges an operator types into: config files and command lines.

Whatever comes in, the answer is a config (that then runs), or a refusal naming what was wrong (exit 2,
nothing changed) — never a traceback. Hypothesis draws documents and argument lists that mix what is
accepted with what is not: known keys with wrong types, NaN and infinities, 5,000-digit numbers, sizes
without units, control characters, bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterator
from dataclasses import asdict, fields
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import autoballoon.cli as cli_module
from autoballoon.backends.base import Backend
from autoballoon.config import DaemonConfig, load_config
from autoballoon.constraints import Range, field_ranges
from autoballoon.controller import Controller
from autoballoon.errors import InvalidValueError
from autoballoon.health import HealthTunables
from autoballoon.journal import Journal
from autoballoon.model import GuestPolicy
from autoballoon.tunables import Tunables
from autoballoon.units import MiB
from tests.helpers.cli import run_cli
from tests.helpers.simhost import sim_backend
from tests.helpers.toml_text import Raw, toml_value

# --- values ------------------------------------------------------------------------------------------


SIZES = ["512MiB", "2GiB", "1GB", "4096B", "0B", "1.5GiB", "-1GiB", "64MiB", "128MiB", "9" * 60 + "B", "10X"]
WORDS = ["20%", "nan%", "200%", "", "yes", "hold", "restore", "max", "start", "\x1b[2J"]
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from([0, 1, -1, 2**63, Raw("9" * 5000), Raw("-0x7f"), Raw("1_000")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1e12, 1e-300, math.nan, math.inf, -math.inf]),
)
TEXT = st.one_of(st.sampled_from([*SIZES, *WORDS]), st.text(max_size=12))
SCALARS = st.one_of(NUMBERS, TEXT, st.booleans())
#: Anything a TOML value can be, right or wrong for the key it lands on.
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


def _good(rng: Range) -> st.SearchStrategy[Any]:
    """Values a config file may well hold for a field of this range, in the forms a person writes."""
    if rng.unit in ("bytes", "bytes/s"):
        low = max(int(rng.low), 0)
        high = min(int(rng.high) // MiB, 64 * 1024)
        return st.integers(max(1, -(-low // MiB)), high).map(lambda m: f"{m}MiB")
    if rng.whole:
        return st.integers(int(rng.low), min(int(rng.high), 10**6))
    high = min(rng.high, 1e5)
    number = st.floats(rng.low, high, exclude_min=rng.low_open, exclude_max=rng.high_open, allow_nan=False)
    if rng.unit == "fraction":
        return st.one_of(number, number.map(lambda f: f"{f * 100:.3f}%"))
    return number


def _table(cls: type, *, prefix: str = "", only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """TOML key -> values for a dataclass's fields: mostly good ones, sometimes anything at all."""
    out: dict[str, Any] = {}
    ranges = {name: rng for name, rng, _ in field_ranges(cls)}
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        key = f.name.removeprefix(prefix).replace("_bytes", "")
        good = _good(ranges[f.name]) if f.name in ranges else st.booleans()
        out[key] = st.one_of(good, good, good, VALUES)
    out["bogus"] = VALUES
    return out


TOP: dict[str, Any] = {
    "interval": st.one_of(st.floats(0.5, 60), VALUES),
    "journal": st.one_of(st.just("/dev/null"), VALUES),
    "on_exit": st.one_of(st.sampled_from(["hold", "restore"]), VALUES),
    "restore_to": st.one_of(st.sampled_from(["max", "start"]), VALUES),
    "manage": st.one_of(st.lists(st.sampled_from(["web-*", "db", "*"]), max_size=2), VALUES),
    "colour": VALUES,
}
TUNABLES = tuple(f.name for f in fields(Tunables) if not f.name.startswith("host_"))
TABLES: dict[str, dict[str, Any]] = {
    "tunables": _table(Tunables, only=TUNABLES),
    "host": _table(Tunables, prefix="host_", only=("host_reserve_bytes", "host_budget_bytes")),
    "health": _table(HealthTunables),
    "defaults": {**_table(GuestPolicy), "os": st.one_of(st.sampled_from(["linux", "windows"]), VALUES)},
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A config document: a few top-level keys, a few keys of each table, maybe one [vm."..."]. Two in
    three are meant to be right (good values only), so that many load and run; the rest mix in anything."""
    good = draw(st.sampled_from([True, True, False]))

    def pick(strategy: Any) -> Any:
        # A good document draws from the first (good) branch of each key's one_of.
        return draw(
            strategy.original_strategies[0] if good and hasattr(strategy, "original_strategies") else strategy
        )

    doc: dict[str, Any] = {}
    top = sorted(k for k in TOP if not (good and k == "colour"))
    for key in draw(st.lists(st.sampled_from(top), max_size=3, unique=True)):
        doc[key] = pick(TOP[key])
    for table, keys in TABLES.items():
        if draw(st.booleans()):
            names = sorted(k for k in keys if not (good and k == "bogus"))
            chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
            doc[table] = {k: pick(keys[k]) for k in chosen}
    if draw(st.booleans()):
        name = draw(st.sampled_from(["web-*", "db", "x\x07y", "é"]))
        keys = TABLES["defaults"]
        names = sorted(k for k in keys if not (good and k == "bogus"))
        chosen = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
        doc["vm"] = {name: {k: pick(keys[k]) for k in chosen}}
    return doc


def to_toml(doc: dict[str, Any]) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for table, body in doc.items():
        if table == "vm":
            for name, section in body.items():
                lines.append(f"[vm.{json.dumps(name)}]")
                lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in section.items()]
        elif isinstance(body, dict):
            lines.append(f"[{table}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


# --- config files ------------------------------------------------------------------------------------

GUESTS = """
[[guest]]
name = "web-1"
max = "2G"
demand = { shape = "constant", level = "300M" }
[[guest]]
name = "db"
max = "1G"
target = "512M"
demand = { shape = "ramp", from = "100M", to = "800M", start = 2, length = 10 }
"""


def _survives_ticks(config: DaemonConfig) -> None:
    backend = sim_backend(GUESTS, warmup=5)
    sim = backend.sim
    controller = Controller(backend, backend.clock, config, Journal(None))
    for _ in range(3):
        assert controller.tick() is not None
        sim.run(2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_any_config_document_loads_and_runs_or_is_refused_naming_a_key(
    tmp_path_factory: Any, doc: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(to_toml(doc), encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path)
    except InvalidValueError as e:
        message = str(e)
        assert message.startswith("invalid ") and ": expected " in message
        assert len(message) < 2000
        event("refused")
        return
    event("loaded")
    _survives_ticks(config)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_config_file_load_or_are_refused(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("raw") / "c.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except InvalidValueError as e:
        assert "config" in str(e)


# --- command lines -----------------------------------------------------------------------------------


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    b = sim_backend(GUESTS, warmup=5)
    monkeypatch.setattr(cli_module, "open_backend", lambda uri: b)
    yield b


def state(b: Backend) -> dict[str, object]:
    return {
        g.name: (g.target_bytes, g.max_bytes, g.vcpus, asdict(g.balloon), b.get_policy(g.name))
        for g in b.snapshot().guests
    }


BAD_ARGS = st.one_of(
    st.sampled_from(["0", "-1G", "1e3", "nan", "inf", "9" * 5000, "64T", "1.5", "", "on", "\x1b[31m"]),
    st.integers(-(10**20), 10**20).map(str),
    st.text(alphabet=string.printable, max_size=10),
)
SIZE_ARGS = st.integers(64, 3000).map(lambda m: f"{m}M")
#: Per command: its positional arguments after the VM, and its options (None: a flag) with good values.
COMMANDS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "setmem": ([SIZE_ARGS], {"--live": None, "--config": None}),
    "setmaxmem": ([SIZE_ARGS], {"--config": None}),
    "setvcpus": ([st.integers(1, 8).map(str)], {"--live": None, "--config": None}),
    "balloon": (
        [],
        {
            "--model": st.sampled_from(["virtio", "none", "xen"]),
            "--autodeflate": st.sampled_from(["on", "off"]),
            "--free-page-reporting": st.sampled_from(["on", "off"]),
            "--stats-period": st.integers(0, 100).map(str),
        },
    ),
    "policy": (
        [],
        {
            "--min": SIZE_ARGS,
            "--max": SIZE_ARGS,
            "--shares": st.integers(1, 5000).map(str),
            "--buffer": st.one_of(
                st.integers(0, 300).map(lambda n: f"{n}%"), st.sampled_from(["0", "0.2", "1"])
            ),
            "--exclude": None,
            "--include": None,
            "--json": None,
        },
    ),
    "list": ([], {"--json": None}),
    "info": ([], {"--json": None}),
    "host": ([], {"--json": None}),
}
NAMES = st.one_of(
    st.sampled_from(["web-1", "db"]), st.sampled_from(["nope", "", "-x", "\x1b[31m"]), st.text(max_size=8)
)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command with its arguments and options; each value is good, or (one time in six) anything."""
    command = draw(st.sampled_from(sorted(COMMANDS)))
    positional, options = COMMANDS[command]

    def value(good: Any) -> str:
        return str(draw(st.one_of(good, good, good, good, good, BAD_ARGS)))

    argv = [command]
    if command not in ("list", "host"):
        known = st.sampled_from(["web-1", "db"])
        argv.append(draw(st.one_of(known, known, known, NAMES)))
    argv += [value(p) for p in positional]
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)):
        argv.append(option)
        if options[option] is not None:
            argv.append(value(options[option]))
    return argv


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_any_command_line_succeeds_or_exits_2_unchanged(
    backend: Backend, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    before = state(backend)
    code, out, err = run_cli(capsys, "sim:///fuzz", *argv)
    event(f"exit {code}")
    assert code in (0, 2), (argv, code, err)  # the simulator never fails a well-formed request
    assert "Traceback" not in err and "\x1b" not in out + err
    if code == 2:
        assert state(backend) == before, argv
        assert err.strip(), argv


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    interval=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["9" * 5000, "x", "-0"])
    )
)
def test_run_intervals_are_accepted_or_refused_before_anything_runs(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path_factory: Any, interval: float | str
) -> None:
    journal = tmp_path_factory.mktemp("run") / "j.jsonl"
    argv = ["run", "--once", "--no-http", "--dry-run", "--journal", str(journal), "--interval", str(interval)]
    code, _, err = run_cli(capsys, "sim:///fuzz", *argv)
    assert code in (0, 2) and "Traceback" not in err
    assert (code == 0) == journal.exists()  # a refused start creates nothing


def test_the_document_writer_round_trips() -> None:
    import tomllib

    doc = {"interval": 2.5, "tunables": {"buffer": "20%", "x": [1, math.inf]}, "vm": {"a*": {"min": "1GiB"}}}
    parsed = tomllib.loads(to_toml(doc))
    assert parsed["interval"] == 2.5 and parsed["vm"]["a*"]["min"] == "1GiB"
    assert parsed["tunables"]["x"][1] == math.inf
