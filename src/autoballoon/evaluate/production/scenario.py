"""Production scenarios: TOML files in ``scenarios/production/`` naming the Debian guests and their roles.

A production scenario says which production-like guests to boot (``rig/debian.py``), what each runs and
how long the service is measured; it is validated like every input from outside, before any guest boots,
and every refusal names the file, the guest, the field and what is accepted. Format::

    [host]
    budget = "3584M"        # the daemon's [host] budget for these guests together

    [run]
    duration = 150          # seconds of measured service, after the guests are aged
    repetitions = 3         # runs per policy; the report gives the median and the spread
    window = 25             # seconds per database / web measurement

    [[guest]]
    name = "db"
    memory = "1536M"
    app = "db"              # db | web | batch | idle
    every = 50              # batch only: start a run every this many seconds (when the last has ended)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from autoballoon.evaluate.real.scenario import Where, parse_budget, read_toml
from autoballoon.units import GiB, MiB

App = Literal["db", "web", "batch", "idle"]
APPS: tuple[App, ...] = ("db", "web", "batch", "idle")
#: Roles whose driver runs in measurement windows (a rate and a p99 latency per window).
WINDOWED: tuple[App, ...] = ("db", "web")
#: The Debian guest needs about 200 MiB for itself and its services, plus its role's data set in cache.
MIN_MEMORY = 768 * MiB
MAX_MEMORY = 16 * GiB
MAX_GUESTS = 8
MIN_DURATION_S, MAX_DURATION_S = 30.0, 7200.0
MIN_WINDOW_S, MAX_WINDOW_S = 5.0, 600.0
MIN_EVERY_S, MAX_EVERY_S = 10.0, 3600.0
MAX_REPETITIONS = 20
DEFAULT_WINDOW_S = 25.0


@dataclass(frozen=True, slots=True)
class ProdGuest:
    name: str
    memory: int
    app: App
    every_s: float | None = None  # batch: seconds between the starts of its runs


@dataclass(frozen=True, slots=True)
class ProdScenario:
    source: str
    name: str
    budget: int
    duration_s: float
    repetitions: int
    window_s: float
    guests: tuple[ProdGuest, ...]

    @property
    def max_total(self) -> int:
        return sum(g.memory for g in self.guests)


def _whole(w: Where, table: dict[str, Any], key: str, low: int, high: int, default: int) -> int:
    raw = table.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise w.error(key, raw, f"a whole number from {low} to {high}")
    return raw


def _guest(raw: Any, index: int, source: str, duration_s: float, seen: set[str]) -> ProdGuest:
    label = raw.get("name") if isinstance(raw, dict) else None
    w = Where(source, f"[[guest]] {label!r}" if isinstance(label, str) else f"[[guest]] #{index + 1}")
    t = w.keys(raw, ("name", "memory", "app", "every"), ("name", "memory", "app"))
    name = t["name"]
    if not isinstance(name, str) or not name or not name.replace("-", "").isalnum():
        raise w.error("name", name, "a name of letters, digits and '-'")
    if name in seen:
        raise w.error("name", name, "a name no other guest of the scenario has")
    memory = w.size(t, "memory", "")
    if not MIN_MEMORY <= memory <= MAX_MEMORY:
        raise w.error("memory", t["memory"], "a size from 768M (Debian and a data set) to 16G")
    app = t["app"]
    if app not in APPS:
        raise w.error("app", app, "one of " + ", ".join(APPS))
    every = None
    if "every" in t:
        if app != "batch":
            raise w.error("every", t["every"], "no value: only a batch guest runs every N seconds")
        every = w.seconds(t, "every", MIN_EVERY_S, min(MAX_EVERY_S, duration_s))
    elif app == "batch":
        raise w.error("every", None, "a number of seconds between the batch runs' starts (required)")
    return ProdGuest(name, memory, cast(App, app), every)


def parse_prod_scenario(data: dict[str, Any], *, source: str, name: str) -> ProdScenario:
    """Validate a parsed TOML document into a :class:`ProdScenario`."""
    budget = parse_budget(data, source)
    top, host = Where(source, "top level"), Where(source, "[host]")
    run = Where(source, "[run]")
    r = run.keys(data["run"], ("duration", "repetitions", "window"), ("duration",))
    duration = run.seconds(r, "duration", MIN_DURATION_S, MAX_DURATION_S)
    repetitions = _whole(run, r, "repetitions", 1, MAX_REPETITIONS, 1)
    window = run.seconds({"window": r.get("window", DEFAULT_WINDOW_S)}, "window", MIN_WINDOW_S,
                         min(MAX_WINDOW_S, duration))  # fmt: skip
    raw_guests = data["guest"]
    if not isinstance(raw_guests, list) or not 1 <= len(raw_guests) <= MAX_GUESTS:
        raise top.error("guest", raw_guests, f"1 to {MAX_GUESTS} [[guest]] tables")
    guests: list[ProdGuest] = []
    for i, raw in enumerate(raw_guests):
        guests.append(_guest(raw, i, source, duration, {g.name for g in guests}))
    if budget > sum(g.memory for g in guests):
        raise host.error("budget", data["host"]["budget"], "a size at most the guests' memory together "
                         "(a larger budget asks no policy to reclaim anything)")  # fmt: skip
    return ProdScenario(source, name, budget, duration, repetitions, window, tuple(guests))


def load_prod_scenario(path: str | Path) -> ProdScenario:
    """Read and validate one production scenario file."""
    p, data = read_toml(path, "production scenario file")
    return parse_prod_scenario(data, source=str(p), name=p.stem)
