"""Real-guest scenarios: TOML files in ``scenarios/real/`` that say which guests to boot and what to play.

A real scenario is input from outside like any other: every mistake is refused with an
:class:`~autoballoon.errors.InvalidValueError` naming the file, the guest, the field and the accepted
forms, before any guest boots. NaN and infinity are refused. Sizes follow virsh, as in the simulator's
scenarios (a bare number is KiB; ``512M``, ``1GiB``...). The format is documented in docs/evaluation-real.md.

Workload commands, played over the rig's control channel at their second from the daemon's start:

- ``alloc SIZE``: the guest's workload takes SIZE more at once (as fast as the guest can touch it);
- ``ramp SIZE RATE/s``: it takes SIZE more at RATE per second;
- ``free`` / ``free SIZE``: it gives everything (or SIZE) back to the guest kernel.

SIZE may be a percentage of the guest's memory (``alloc 25%``). The agent holds memory in whole MiB, so
sizes are rounded to the nearest MiB when they are played.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from autoballoon.errors import InvalidValueError
from autoballoon.units import ACCEPTED_FORMS, MiB, parse_size

CommandKind = Literal["alloc", "ramp", "free"]
WORKLOAD_FORMS = (
    'a list of [SECONDS, "COMMAND"] pairs, seconds from the start in order, where COMMAND is '
    '"alloc SIZE", "ramp SIZE RATE/s", "free" or "free SIZE"; SIZE like 100M, 1G or 25% (of the '
    "guest's memory), RATE like 20M/s"
)
RATE_SUFFIX = "/s"
PERCENT = 100.0

#: What the rig's 2-core host can hold and boot in reasonable time; a scenario outside is likely a typo.
MIN_MEMORY = 128 * MiB
MAX_MEMORY = 4096 * MiB
MAX_SWAP = 4096 * MiB
MAX_GUESTS = 8
MIN_DURATION_S = 10.0
MAX_DURATION_S = 3600.0
#: The agent's hog moves whole MiB: a slower ramp would round to nothing.
MIN_RATE = MiB
DEFAULT_MEMORY = "512M"


@dataclass(frozen=True, slots=True)
class Command:
    """One workload step. ``size`` None means "everything" (``free``); ``rate`` 0 means "at once"."""

    at_s: float
    text: str
    kind: CommandKind
    size: int | None
    rate: int = 0

    @property
    def grows(self) -> bool:
        return self.kind != "free"


@dataclass(frozen=True, slots=True)
class RealGuest:
    name: str
    memory: int
    autodeflate: bool
    swap: int
    workload: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class RealScenario:
    source: str
    name: str
    budget: int  # the daemon's [host] budget for all these guests together
    duration_s: float
    guests: tuple[RealGuest, ...]

    @property
    def max_total(self) -> int:
        return sum(g.memory for g in self.guests)


class Where:
    """Where a value came from, so that every refusal can say it."""

    def __init__(self, source: str, section: str) -> None:
        self.source = source
        self.section = section

    def error(self, key: str, value: Any, accepted: str) -> InvalidValueError:
        return InvalidValueError(f"{self.source}: {self.section} field {key!r}", value, accepted)

    def keys(self, table: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise InvalidValueError(f"{self.source}: {self.section}", table, "a table")
        for key in table:
            if key not in allowed:
                raise self.error(key, table[key], "no such field; the fields are " + ", ".join(allowed))
        for key in required:
            if key not in table:
                raise self.error(key, None, "a value (the field is required)")
        return table

    def size(self, table: dict[str, Any], key: str, default: str) -> int:
        raw = table.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise self.error(key, raw, ACCEPTED_FORMS)
        return parse_size(raw, what=f"{self.source}: {self.section} field {key!r}")

    def seconds(self, table: dict[str, Any], key: str, low: float, high: float) -> float:
        raw = table.get(key)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self.error(key, raw, f"a number of seconds from {low:g} to {high:g}")
        if not low <= raw <= high:
            raise self.error(key, raw, f"a number of seconds from {low:g} to {high:g}")
        return float(raw)

    def flag(self, table: dict[str, Any], key: str) -> bool:
        raw = table.get(key, False)
        if not isinstance(raw, bool):
            raise self.error(key, raw, "true or false")
        return raw


def _command_size(word: str, memory: int, what: str) -> int:
    """A workload size: a virsh size, or a percentage of the guest's memory."""
    if word.endswith("%"):
        try:
            share = float(word[:-1])
        except ValueError:
            raise InvalidValueError(what, word, WORKLOAD_FORMS) from None
        if not (math.isfinite(share) and 0 < share <= PERCENT):
            raise InvalidValueError(what, word, "a percentage above 0 and at most 100")
        return round(memory * share / PERCENT)
    size = parse_size(word, what=what)
    if size == 0:
        raise InvalidValueError(what, word, "a size above 0")
    return size


def parse_command(at_s: float, text: str, memory: int, what: str) -> Command:
    """One ``"alloc 100M"`` / ``"ramp 200M 20M/s"`` / ``"free [SIZE]"``; ``memory`` resolves ``25%``."""
    words = text.split()
    kind = words[0] if words else ""
    if kind == "alloc" and len(words) == 2:
        return Command(at_s, text, "alloc", _command_size(words[1], memory, what))
    if kind == "ramp" and len(words) == 3:
        if not words[2].endswith(RATE_SUFFIX):
            raise InvalidValueError(what, text, "a rate ending in /s, like 20M/s")
        rate = parse_size(words[2].removesuffix(RATE_SUFFIX), what=what)
        if rate < MIN_RATE:
            raise InvalidValueError(what, text, "a rate of at least 1M/s (the guest's workload moves MiB)")
        return Command(at_s, text, "ramp", _command_size(words[1], memory, what), rate)
    if kind == "free" and len(words) in (1, 2):
        return Command(at_s, text, "free", _command_size(words[1], memory, what) if len(words) == 2 else None)
    raise InvalidValueError(what, text, WORKLOAD_FORMS)


def _workload(raw: Any, memory: int, duration_s: float, w: Where) -> tuple[Command, ...]:
    if not isinstance(raw, list):
        raise w.error("workload", raw, WORKLOAD_FORMS)
    commands: list[Command] = []
    for i, item in enumerate(raw):
        what = f"{w.source}: {w.section} field 'workload' entry {i + 1}"
        ok = isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)
        at = item[0] if ok else None
        if not ok or isinstance(at, bool) or not isinstance(at, int | float):
            raise InvalidValueError(what, item, WORKLOAD_FORMS)
        if not (math.isfinite(at) and 0 <= at < duration_s):
            raise InvalidValueError(what, item, f"a start second from 0 to below the run's {duration_s:g} s")
        if commands and at < commands[-1].at_s:
            raise InvalidValueError(
                what, item, f"a start second not before the previous ({commands[-1].at_s:g})"
            )
        commands.append(parse_command(float(at), item[1], memory, what))
    return tuple(commands)


def parse_budget(data: dict[str, Any], source: str) -> int:
    """The top level of a real or production scenario (``[host]``, ``[run]``, ``[[guest]]``) and its
    ``[host] budget``, checked the same way for both."""
    top = Where(source, "top level")
    top.keys(data, ("host", "run", "guest"), ("host", "run", "guest"))
    host = Where(source, "[host]")
    budget = host.size(host.keys(data["host"], ("budget",), ("budget",)), "budget", "")
    if budget == 0:
        raise host.error("budget", data["host"]["budget"], "a size above 0")
    return budget


def read_toml(path: str | Path, what: str) -> tuple[Path, dict[str, Any]]:
    """A scenario file's TOML document; a clear error naming ``what`` if it is not one."""
    p = Path(path)
    try:
        return p, tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValueError(what, str(p), f"a readable UTF-8 TOML file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValueError(f"{p}: TOML", str(exc), "valid TOML (https://toml.io)") from None


def parse_real_scenario(data: dict[str, Any], *, source: str, name: str) -> RealScenario:
    """Validate a parsed TOML document into a :class:`RealScenario`."""
    budget = parse_budget(data, source)
    top = Where(source, "top level")
    run = Where(source, "[run]")
    duration = run.seconds(run.keys(data["run"], ("duration",), ("duration",)), "duration", MIN_DURATION_S,
                           MAX_DURATION_S)  # fmt: skip
    raw_guests = data["guest"]
    if not isinstance(raw_guests, list) or not 1 <= len(raw_guests) <= MAX_GUESTS:
        raise top.error("guest", raw_guests, f"1 to {MAX_GUESTS} [[guest]] tables")
    guests: list[RealGuest] = []
    for i, raw in enumerate(raw_guests):
        label = raw.get("name") if isinstance(raw, dict) else None
        w = Where(source, f"[[guest]] {label!r}" if isinstance(label, str) else f"[[guest]] #{i + 1}")
        t = w.keys(raw, ("name", "memory", "autodeflate", "swap", "workload"), ("name",))
        guest_name = t["name"]
        if not isinstance(guest_name, str) or not guest_name.replace("-", "").isalnum():
            raise w.error("name", guest_name, "a name of letters, digits and '-'")
        if guest_name in {g.name for g in guests}:
            raise w.error("name", guest_name, "a name no other guest of the scenario has")
        memory = w.size(t, "memory", DEFAULT_MEMORY)
        if not MIN_MEMORY <= memory <= MAX_MEMORY:
            raise w.error("memory", t.get("memory"), "a size from 128M to 4G")
        swap = w.size(t, "swap", "0")
        if swap > MAX_SWAP:
            raise w.error("swap", t.get("swap"), "a size from 0 (no swap) to 4G")
        workload = _workload(t.get("workload", []), memory, duration, w)
        guests.append(RealGuest(guest_name, memory, w.flag(t, "autodeflate"), swap, workload))
    return RealScenario(source, name, budget, duration, tuple(guests))


def load_real_scenario(path: str | Path) -> RealScenario:
    """Read and validate one real scenario file."""
    p, data = read_toml(path, "real scenario file")
    return parse_real_scenario(data, source=str(p), name=p.stem)
