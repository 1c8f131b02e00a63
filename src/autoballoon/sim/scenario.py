"""Scenario files: the simulated host and its guests, from TOML into frozen, validated values.

A scenario is data from outside, so every mistake is reported as an
:class:`~autoballoon.errors.InvalidValueError` naming the file, the guest, the field and what is accepted,
and nothing is half-loaded. Sizes follow virsh (a bare number is KiB) through :mod:`autoballoon.units`;
trace files hold (seconds, bytes) rows. The format is documented in ``docs/scenarios.md``.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.sim.demand import (
    SECONDS_PER_DAY,
    SHAPE_NAMES,
    Constant,
    Demand,
    Diurnal,
    Ramp,
    Shape,
    Sine,
    Spikes,
    Steps,
    Trace,
)
from autoballoon.units import ACCEPTED_FORMS, parse_percent, parse_size

OS_NAMES = ("linux", "windows")
BALLOON_MODELS = ("virtio", "none")


@dataclass(frozen=True, slots=True)
class ScenarioLimits:
    """Defaults and bounds of the file format (not physics: those are in :mod:`.tunables`)."""

    reserve: str = "512M"
    base_used: str = "1G"
    cpus: int = 8
    duration: float = SECONDS_PER_DAY
    step: float = 1.0
    max_count: int = 10_000
    #: Guests x steps of the precomputed demand table (8 bytes each): keeps a typo from eating the host.
    max_table_cells: int = 100_000_000


LIMITS = ScenarioLimits()


@dataclass(frozen=True, slots=True)
class HostSpec:
    ram: int
    reserve: int
    base_used: int
    cpus: int
    swap: int = 0
    name: str = "sim-host"


@dataclass(frozen=True, slots=True)
class RunSpec:
    duration: float
    step: float = 1.0

    @property
    def steps(self) -> int:
        return max(1, round(self.duration / self.step))


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """One simulated VM. ``None`` means "the tunables' default" (kernel, swap, cpu, stats period)."""

    name: str
    max: int
    target: int
    demand: Demand
    vcpus: int = 1
    max_vcpus: int = 1
    os: str = "linux"
    autodeflate: bool = False
    stats: bool = True
    stats_period: float | None = None
    stuck: bool = False
    cpu_storm: bool = False
    swap: int | None = None
    kernel: int | None = None
    cpu: float | None = None
    balloon: str = "virtio"
    free_page_reporting: bool = False
    policy: GuestPolicy = field(default_factory=GuestPolicy)


@dataclass(frozen=True, slots=True)
class Scenario:
    source: str
    host: HostSpec
    run: RunSpec
    guests: tuple[GuestSpec, ...]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.guests]


class _Where:
    """Where a value came from, so that every error message can say it."""

    def __init__(self, source: str, section: str) -> None:
        self.source = source
        self.section = section

    def what(self, key: str) -> str:
        return f"{self.source}: {self.section} field {key!r}"

    def error(self, key: str, value: Any, accepted: str) -> InvalidValueError:
        return InvalidValueError(self.what(key), value, accepted)

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                raise InvalidValueError(
                    f"{self.source}: {self.section} field", key, "one of " + ", ".join(allowed)
                )

    def require(self, table: Mapping[str, Any], key: str) -> Any:
        if key not in table:
            raise InvalidValueError(self.what(key), None, "a value (the field is required)")
        return table[key]

    def size(self, table: Mapping[str, Any], key: str, default: Any = None, *, unit: int = 1024) -> int:
        raw = table.get(key, default) if default is not None else self.require(table, key)
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise self.error(key, raw, ACCEPTED_FORMS)
        return parse_size(raw, default_unit=unit, what=self.what(key))

    def number(
        self,
        table: Mapping[str, Any],
        key: str,
        default: float | None = None,
        *,
        low: float = 0.0,
        high: float = float("inf"),
        low_open: bool = False,
    ) -> float:
        raw = table.get(key, default) if default is not None else self.require(table, key)
        bad = isinstance(raw, bool) or not isinstance(raw, int | float)
        if not bad:
            bad = raw < low or raw > high or (low_open and raw == low)
        if bad:
            lower = f"above {low:g}" if low_open else f"from {low:g}"
            upper = "" if high == float("inf") else f" to {high:g}"
            raise self.error(key, raw, f"a number {lower}{upper}")
        return float(raw)

    def integer(self, table: Mapping[str, Any], key: str, default: int | None, *, low: int, high: int) -> int:
        raw = table.get(key, default) if default is not None else self.require(table, key)
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise self.error(key, raw, f"a whole number from {low} to {high}")
        return raw

    def flag(self, table: Mapping[str, Any], key: str, default: bool) -> bool:
        raw = table.get(key, default)
        if not isinstance(raw, bool):
            raise self.error(key, raw, "true or false")
        return raw

    def choice(self, table: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
        raw = table.get(key, default)
        if raw not in choices:
            raise self.error(key, raw, "one of " + ", ".join(repr(c) for c in choices))
        return str(raw)

    def table(self, table: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        raw = table.get(key, {})
        if not isinstance(raw, dict):
            raise self.error(key, raw, "a table, like {key = value, ...}")
        return raw


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; trace files are found relative to it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValueError("scenario file", str(p), f"a readable UTF-8 TOML file ({exc})") from None
    return loads_scenario(text, source=str(p), base_dir=p.parent)


def loads_scenario(text: str, *, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Parse scenario TOML text; ``base_dir`` resolves relative trace file paths."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValueError(f"{source}: TOML", str(exc), "valid TOML (https://toml.io)") from None
    return parse_scenario(data, source=source, base_dir=base_dir or Path.cwd())


def parse_scenario(data: Mapping[str, Any], *, source: str, base_dir: Path) -> Scenario:
    """Validate an already-parsed TOML document into a :class:`Scenario`."""
    top = _Where(source, "top level")
    top.check_keys(data, ("host", "run", "guest"))
    host = _parse_host(top.table(data, "host"), _Where(source, "[host]"))
    run = _parse_run(top.table(data, "run"), _Where(source, "[run]"))
    raw_guests = data.get("guest", [])
    if not isinstance(raw_guests, list) or not raw_guests:
        raise top.error("guest", raw_guests, "one or more [[guest]] tables")
    guests: list[GuestSpec] = []
    for i, raw in enumerate(raw_guests):
        label = f"[[guest]] #{i + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            label = f"[[guest]] {raw['name']!r}"
        guests.extend(_parse_guests(raw, _Where(source, label), run, base_dir))
    seen: set[str] = set()
    for g in guests:
        if g.name in seen:
            raise InvalidValueError(f"{source}: [[guest]] field 'name'", g.name, "names unique on the host")
        seen.add(g.name)
    cells = len(guests) * run.steps
    if cells > LIMITS.max_table_cells:
        raise top.error(
            "run",
            f"{len(guests)} guests x {run.steps} steps",
            f"at most {LIMITS.max_table_cells} guest-steps (raise run.step or shorten run.duration)",
        )
    return Scenario(source=source, host=host, run=run, guests=tuple(guests))


def _parse_host(t: Mapping[str, Any], w: _Where) -> HostSpec:
    w.check_keys(t, ("ram", "reserve", "base_used", "cpus", "swap", "name"))
    ram = w.size(t, "ram")
    if ram == 0:
        raise w.error("ram", t["ram"], "a size above 0")
    reserve = w.size(t, "reserve", LIMITS.reserve)
    base_used = w.size(t, "base_used", LIMITS.base_used)
    if reserve + base_used >= ram:
        raise w.error("base_used", t.get("base_used", LIMITS.base_used), "base_used + reserve below ram")
    name = t.get("name", "sim-host")
    if not isinstance(name, str) or not name:
        raise w.error("name", name, "a non-empty string")
    return HostSpec(
        ram=ram,
        reserve=reserve,
        base_used=base_used,
        cpus=w.integer(t, "cpus", LIMITS.cpus, low=1, high=4096),
        swap=w.size(t, "swap", 0),
        name=name,
    )


def _parse_run(t: Mapping[str, Any], w: _Where) -> RunSpec:
    w.check_keys(t, ("duration", "step"))
    duration = w.number(t, "duration", LIMITS.duration, low=0.0, low_open=True)
    step = w.number(t, "step", LIMITS.step, low=0.0, high=duration, low_open=True)
    return RunSpec(duration=duration, step=step)


_GUEST_KEYS = (
    "name",
    "max",
    "target",
    "vcpus",
    "max_vcpus",
    "os",
    "autodeflate",
    "stats",
    "stats_period",
    "stuck",
    "cpu_storm",
    "swap",
    "kernel",
    "cpu",
    "balloon",
    "free_page_reporting",
    "policy",
    "count",
    "demand",
)


def _parse_guests(raw: Any, w: _Where, run: RunSpec, base_dir: Path) -> list[GuestSpec]:
    if not isinstance(raw, dict):
        raise InvalidValueError(f"{w.source}: {w.section}", raw, "a [[guest]] table")
    w.check_keys(raw, _GUEST_KEYS)
    name = w.require(raw, "name")
    if not isinstance(name, str) or not name or any(c.isspace() or c in "/?#" for c in name):
        raise w.error("name", name, "a non-empty name without spaces, '/', '?' or '#'")
    max_bytes = w.size(raw, "max")
    if max_bytes == 0:
        raise w.error("max", raw["max"], "a size above 0")
    target = w.size(raw, "target", raw["max"])
    if target > max_bytes:
        raise w.error("target", raw["target"], f"a size no larger than max ({raw['max']})")
    vcpus = w.integer(raw, "vcpus", 1, low=1, high=4096)
    kernel = w.size(raw, "kernel", 0) if "kernel" in raw else None
    if kernel is not None and kernel >= max_bytes:
        raise w.error("kernel", raw["kernel"], "a size below max")
    stats_period = (
        w.number(raw, "stats_period", 0.0, low=0.0, low_open=True) if "stats_period" in raw else None
    )
    count = w.integer(raw, "count", 1, low=1, high=LIMITS.max_count)
    demand = _parse_demand(w.table(raw, "demand"), _Where(w.source, f"{w.section} demand"), run, base_dir)
    base = GuestSpec(
        name=name,
        max=max_bytes,
        target=target,
        demand=demand,
        vcpus=vcpus,
        max_vcpus=w.integer(raw, "max_vcpus", vcpus, low=vcpus, high=4096),
        os=w.choice(raw, "os", "linux", OS_NAMES),
        autodeflate=w.flag(raw, "autodeflate", False),
        stats=w.flag(raw, "stats", True),
        stats_period=stats_period,
        stuck=w.flag(raw, "stuck", False),
        cpu_storm=w.flag(raw, "cpu_storm", False),
        swap=w.size(raw, "swap", 0) if "swap" in raw else None,
        kernel=kernel,
        cpu=w.number(raw, "cpu", 0.0, high=1.0) if "cpu" in raw else None,
        balloon=w.choice(raw, "balloon", "virtio", BALLOON_MODELS),
        free_page_reporting=w.flag(raw, "free_page_reporting", False),
        policy=_parse_policy(w.table(raw, "policy"), _Where(w.source, f"{w.section} policy"), max_bytes),
    )
    if count == 1:
        return [base]
    width = len(str(count))
    return [replace(base, name=f"{name}-{i:0{width}d}") for i in range(1, count + 1)]


def _parse_policy(t: Mapping[str, Any], w: _Where, max_bytes: int) -> GuestPolicy:
    w.check_keys(t, ("min", "max", "shares", "buffer", "exclude"))
    low = w.size(t, "min", 0) if "min" in t else None
    high = w.size(t, "max", 0) if "max" in t else None
    if low is not None and low > max_bytes:
        raise w.error("min", t["min"], "a size no larger than the guest's max")
    if low is not None and high is not None and low > high:
        raise w.error("min", t["min"], f"a size no larger than policy max ({t['max']})")
    buffer = None
    if "buffer" in t:
        raw = t["buffer"]
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise w.error("buffer", raw, "a percentage like 20 or '20%'")
        buffer = parse_percent(raw, what=w.what("buffer"))
    return GuestPolicy(
        min_bytes=low,
        max_bytes=high,
        shares=w.integer(t, "shares", 0, low=0, high=1_000_000) if "shares" in t else None,
        buffer=buffer,
        exclude=w.flag(t, "exclude", False),
    )


_SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    "constant": ("level",),
    "steps": ("points",),
    "ramp": ("from", "to", "start", "length"),
    "sine": ("mean", "amplitude", "period", "phase"),
    "diurnal": ("low", "high", "peak_hour", "period"),
    "spikes": ("base", "height", "every", "length"),
    "trace": ("file", "interpolate"),
}


def _parse_demand(t: Mapping[str, Any], w: _Where, run: RunSpec, base_dir: Path) -> Demand:
    if not t:
        raise InvalidValueError(
            w.what("shape"), None, "a demand table, like {shape = 'constant', level = '1G'}"
        )
    shape_name = w.choice(t, "shape", "", SHAPE_NAMES)
    w.check_keys(t, ("shape", "noise", *_SHAPE_KEYS[shape_name]))
    noise = w.number(t, "noise", 0.0, high=1.0)
    shape: Shape
    match shape_name:
        case "constant":
            shape = Constant(w.size(t, "level"))
        case "steps":
            shape = Steps(_parse_points(w, t.get("points")))
        case "ramp":
            shape = Ramp(
                start_level=w.size(t, "from"),
                end_level=w.size(t, "to"),
                start=w.number(t, "start", 0.0),
                length=w.number(t, "length", run.duration),
            )
        case "sine":
            shape = Sine(
                mean=w.size(t, "mean"),
                amplitude=w.size(t, "amplitude"),
                period=w.number(t, "period", low=0.0, low_open=True),
                phase=w.number(t, "phase", 0.0, low=float("-inf")),
            )
        case "diurnal":
            shape = Diurnal(
                low=w.size(t, "low"),
                high=w.size(t, "high"),
                peak_hour=w.number(t, "peak_hour", 14.0, high=24.0),
                period=w.number(t, "period", SECONDS_PER_DAY, low=0.0, low_open=True),
            )
        case "spikes":
            shape = Spikes(
                base=w.size(t, "base"),
                height=w.size(t, "height"),
                every=w.number(t, "every", low=0.0, low_open=True),
                length=w.number(t, "length", low=0.0, low_open=True),
            )
        case _:
            interpolate = w.choice(t, "interpolate", "linear", ("linear", "hold"))
            shape = _load_trace(w, w.require(t, "file"), base_dir, interpolate)
    return Demand(shape=shape, noise=noise)


def _parse_points(w: _Where, raw: Any) -> tuple[tuple[float, int], ...]:
    accepted = "a list of [seconds, size] pairs in increasing time, like [[0, '1G'], [3600, '3G']]"
    if not isinstance(raw, list) or not raw:
        raise w.error("points", raw, accepted)
    points: list[tuple[float, int]] = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2:
            raise w.error("points", pair, accepted)
        at = w.number({"points": pair[0]}, "points")
        size = w.size({"points": pair[1]}, "points")
        if points and at <= points[-1][0]:
            raise w.error("points", pair, accepted)
        points.append((at, size))
    return tuple(points)


def _load_trace(w: _Where, file: Any, base_dir: Path, interpolate: str) -> Trace:
    accepted = (
        "a CSV file of 'seconds,bytes' rows (a header line and '#' comments allowed), in increasing time"
    )
    if not isinstance(file, str) or not file:
        raise w.error("file", file, "a path to a CSV file, relative to the scenario file")
    path = Path(file) if Path(file).is_absolute() else base_dir / file
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise w.error("file", file, f"{accepted}; could not read {path}: {exc}") from None
    times: list[float] = []
    values: list[int] = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{path} line {lineno}"
        try:
            at = float(row[0])
        except ValueError:
            if not times:
                continue  # a header line
            raise InvalidValueError(f"{w.what('file')} ({where})", row, accepted) from None
        if len(row) != 2 or at < 0 or (times and at <= times[-1]):
            raise InvalidValueError(f"{w.what('file')} ({where})", row, accepted)
        values.append(parse_size(row[1].strip(), default_unit=1, what=f"{w.what('file')} ({where}) bytes"))
        times.append(at)
    if not times:
        raise w.error("file", file, f"{accepted}; {path} has no rows")
    return Trace(times=tuple(times), values=tuple(values), source=str(path), interpolate=interpolate)  # type: ignore[arg-type]
