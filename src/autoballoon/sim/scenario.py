"""Scenario files: the simulated host and its guests, from TOML into frozen, validated values.

A scenario is data from outside, so every mistake is reported as an
:class:`~autoballoon.errors.InvalidValueError` naming the file, the guest, the field and what is accepted,
and nothing is half-loaded. Sizes follow virsh (a bare number is KiB) through :mod:`autoballoon.units`;
trace files hold (seconds, bytes) rows. The format is documented in ``docs/scenarios.md``.

Every number in a scenario is checked by one :class:`~autoballoon.constraints.Range`, the type the
config, the CLI and the API check with, declared once per field below: NaN and infinity are refused
everywhere, and every bound exists because something downstream would otherwise spin, overflow or
allocate without limit (a spike every 1e-300 s, a run of 1e300 s, a size beyond int64).
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from autoballoon.constraints import FRACTION, SHARES, ConstraintError, Range
from autoballoon.errors import InvalidValueError, LimitError
from autoballoon.model import MAX_BUFFER, GuestPolicy, check_policy
from autoballoon.sim.demand import (
    INTERPOLATIONS,
    SECONDS_PER_DAY,
    SHAPE_NAMES,
    Constant,
    Demand,
    Diurnal,
    Interpolation,
    Ramp,
    Shape,
    Sine,
    Spikes,
    Steps,
    Trace,
)
from autoballoon.units import ACCEPTED_FORMS, BUFFER_FORMS, TiB, parse_buffer, parse_size

OS_NAMES = ("linux", "windows")
BALLOON_MODELS = ("virtio", "none")

# Defaults and bounds of the file format (not physics: those are in :mod:`.physics`).
DEFAULT_RESERVE = "512M"
DEFAULT_BASE_USED = "1G"
DEFAULT_CPUS = 8
DEFAULT_DURATION = SECONDS_PER_DAY
DEFAULT_STEP = 1.0
MAX_COUNT = 10_000
#: Guests x steps of the precomputed demand table (8 bytes each): keeps a typo from eating the host.
MAX_TABLE_CELLS = 100_000_000
#: The largest size in a scenario. 10,000 guests of this size still sum inside int64 bytes, which the
#: engine's arrays are.
MAX_SIZE = 64 * TiB
#: The longest time anywhere in a scenario (a run, a period, an event): ten years of seconds.
MAX_SECONDS = 3650 * SECONDS_PER_DAY


# Each constrained field, declared once.
DURATION = Range(0, MAX_SECONDS, unit="seconds", low_open=True)
STEP = Range(0.001, MAX_SECONDS, unit="seconds")
STATS_PERIOD = Range(1.0, SECONDS_PER_DAY, unit="seconds")
SECONDS = Range(0, MAX_SECONDS, unit="seconds")  # a moment or a length in a scenario (never negative)
PERIOD = Range(0, MAX_SECONDS, unit="seconds", low_open=True)
PHASE = Range(-MAX_SECONDS, MAX_SECONDS, unit="seconds")
HOUR = Range(0, 24)
CPUS = Range(1, 4096, whole=True)
COUNT = Range(1, MAX_COUNT, whole=True)


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
    """One simulated VM. ``None`` means "the physics default" (kernel, swap, cpu, stats period)."""

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
class Event:
    """A fault or a change at ``at`` seconds: one guest's (``guest`` set) or the host's.

    Every field but ``at`` and ``guest`` is None when the event does not change it. ``base_used`` moves
    the host's own (non-VM) use linearly to the new value over ``over`` seconds (0: at once).
    """

    at: float
    guest: str | None = None
    #: The guest's balloon statistics stop (False: its balloon service died, its period was set to 0)
    #: or start again (True).
    stats: bool | None = None
    #: The balloon driver unloads (False) or loads (True): without it the balloon cannot move and the guest
    #: sends no statistics. A driver that loads late is ``driver = false`` at 0, ``true`` later.
    driver: bool | None = None
    #: The guest is paused (True: no CPU, no statistics, its memory and workload frozen) or resumed.
    paused: bool | None = None
    #: The balloon driver loses the targets the host sets (False: the call returns, the host reports the
    #: new target, the balloon does not move) or receives them again (True: a lost one stays lost, only
    #: a target sent again reaches it).
    requests: bool | None = None
    base_used: int | None = None
    over: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    source: str
    host: HostSpec
    run: RunSpec
    guests: tuple[GuestSpec, ...]
    events: tuple[Event, ...] = ()

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.guests]


C = TypeVar("C", bound=str)


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

    def _raw(self, table: Mapping[str, Any], key: str, default: Any) -> Any:
        return table.get(key, default) if default is not None else self.require(table, key)

    def size(self, table: Mapping[str, Any], key: str, default: Any = None, *, unit: int = 1024) -> int:
        raw = self._raw(table, key, default)
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise self.error(key, raw, ACCEPTED_FORMS)
        value = parse_size(raw, default_unit=unit, what=self.what(key))
        if value > MAX_SIZE:
            raise self.error(key, raw, f"a size no larger than {MAX_SIZE // TiB} TiB")
        return value

    def number(self, table: Mapping[str, Any], key: str, rule: Range, default: float | None = None) -> float:
        raw = self._raw(table, key, default)
        if not rule.accepts(raw):
            raise self.error(key, raw, rule.describe())
        return float(raw)

    def integer(self, table: Mapping[str, Any], key: str, rule: Range, default: int | None = None) -> int:
        raw = self._raw(table, key, default)
        if not rule.whole or not rule.accepts(raw):
            raise self.error(key, raw, rule.describe())
        return int(raw)

    def flag(self, table: Mapping[str, Any], key: str, default: bool | None) -> bool:
        raw = self._raw(table, key, default)
        if not isinstance(raw, bool):
            raise self.error(key, raw, "true or false")
        return raw

    def choice(self, table: Mapping[str, Any], key: str, default: C, choices: tuple[C, ...]) -> C:
        """One of ``choices``, returned as the choice itself (so a ``Literal`` tuple gives that type)."""
        raw = table.get(key, default)
        for choice in choices:
            if raw == choice:
                return choice
        raise self.error(key, raw, "one of " + ", ".join(repr(c) for c in choices))

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
    top.check_keys(data, ("host", "run", "guest", "event"))
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
    if cells > MAX_TABLE_CELLS:
        raise top.error(
            "run",
            f"{len(guests)} guests x {run.steps} steps",
            f"at most {MAX_TABLE_CELLS} guest-steps (raise run.step or shorten run.duration)",
        )
    raw_events = data.get("event", [])
    if not isinstance(raw_events, list):
        raise top.error("event", raw_events, "[[event]] tables")
    events = [
        _parse_event(raw, _Where(source, f"[[event]] #{i + 1}"), host, seen)
        for i, raw in enumerate(raw_events)
    ]
    events.sort(key=lambda e: e.at)  # stable: events at the same moment apply in file order
    return Scenario(source=source, host=host, run=run, guests=tuple(guests), events=tuple(events))


def _parse_host(t: Mapping[str, Any], w: _Where) -> HostSpec:
    w.check_keys(t, ("ram", "reserve", "base_used", "cpus", "swap", "name"))
    ram = w.size(t, "ram")
    if ram == 0:
        raise w.error("ram", t["ram"], "a size above 0")
    reserve = w.size(t, "reserve", DEFAULT_RESERVE)
    base_used = w.size(t, "base_used", DEFAULT_BASE_USED)
    if reserve + base_used >= ram:
        raise w.error("base_used", t.get("base_used", DEFAULT_BASE_USED), "base_used + reserve below ram")
    name = t.get("name", "sim-host")
    if not isinstance(name, str) or not name:
        raise w.error("name", name, "a non-empty string")
    return HostSpec(
        ram=ram,
        reserve=reserve,
        base_used=base_used,
        cpus=w.integer(t, "cpus", CPUS, DEFAULT_CPUS),
        swap=w.size(t, "swap", 0),
        name=name,
    )


def _parse_run(t: Mapping[str, Any], w: _Where) -> RunSpec:
    w.check_keys(t, ("duration", "step"))
    duration = w.number(t, "duration", DURATION, DEFAULT_DURATION)
    step = w.number(t, "step", STEP, DEFAULT_STEP)
    if step > duration:
        raise w.error(
            "step", t.get("step", DEFAULT_STEP), f"a number of seconds no larger than duration ({duration:g})"
        )
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
    vcpus = w.integer(raw, "vcpus", CPUS, 1)
    kernel = w.size(raw, "kernel", 0) if "kernel" in raw else None
    if kernel is not None and kernel >= max_bytes:
        raise w.error("kernel", raw["kernel"], "a size below max")
    count = w.integer(raw, "count", COUNT, 1)
    demand = _parse_demand(w.table(raw, "demand"), _Where(w.source, f"{w.section} demand"), run, base_dir)
    base = GuestSpec(
        name=name,
        max=max_bytes,
        target=target,
        demand=demand,
        vcpus=vcpus,
        max_vcpus=w.integer(raw, "max_vcpus", Range(vcpus, CPUS.high, whole=True), vcpus),
        os=w.choice(raw, "os", "linux", OS_NAMES),
        autodeflate=w.flag(raw, "autodeflate", False),
        stats=w.flag(raw, "stats", True),
        stats_period=w.number(raw, "stats_period", STATS_PERIOD) if "stats_period" in raw else None,
        stuck=w.flag(raw, "stuck", False),
        cpu_storm=w.flag(raw, "cpu_storm", False),
        swap=w.size(raw, "swap", 0) if "swap" in raw else None,
        kernel=kernel,
        cpu=w.number(raw, "cpu", FRACTION) if "cpu" in raw else None,
        balloon=w.choice(raw, "balloon", "virtio", BALLOON_MODELS),
        free_page_reporting=w.flag(raw, "free_page_reporting", False),
        policy=_parse_policy(w.table(raw, "policy"), _Where(w.source, f"{w.section} policy"), max_bytes),
    )
    if count == 1:
        return [base]
    width = len(str(count))
    return [replace(base, name=f"{name}-{i:0{width}d}") for i in range(1, count + 1)]


#: A scenario's policy keys by the :class:`GuestPolicy` field each one sets.
_POLICY_KEYS = {"min_bytes": "min", "max_bytes": "max"}


def _parse_policy(t: Mapping[str, Any], w: _Where, max_bytes: int) -> GuestPolicy:
    w.check_keys(t, ("min", "max", "shares", "buffer", "exclude"))
    low = w.size(t, "min", 0) if "min" in t else None
    high = w.size(t, "max", 0) if "max" in t else None
    buffer = None
    if "buffer" in t:
        raw = t["buffer"]
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise w.error("buffer", raw, BUFFER_FORMS)
        buffer = parse_buffer(raw, what=w.what("buffer"))  # as the config file and the CLI take it
        if not 0.0 <= buffer <= MAX_BUFFER:
            raise w.error("buffer", raw, BUFFER_FORMS)
    shares = w.integer(t, "shares", SHARES) if "shares" in t else None
    try:
        policy = GuestPolicy(
            min_bytes=low, max_bytes=high, shares=shares, buffer=buffer, exclude=w.flag(t, "exclude", False)
        )
        check_policy(policy, max_bytes=max_bytes)  # what the config file and the API refuse, refused here
    except ConstraintError as e:  # a size below the least target anybody may set, or beyond any host
        key = _POLICY_KEYS.get(e.field, e.field)
        raise w.error(key, t.get(key), e.accepted) from None
    except LimitError as e:
        key = "max" if e.what == "policy maximum" else "min"
        raise w.error(key, t[key], "a size not " + e.limit) from None
    return policy


_EVENT_CHANGES = ("stats", "driver", "paused", "requests", "base_used")


def _parse_event(raw: Any, w: _Where, host: HostSpec, guests: set[str]) -> Event:
    if not isinstance(raw, dict):
        raise InvalidValueError(f"{w.source}: {w.section}", raw, "an [[event]] table")
    w.check_keys(raw, ("at", "guest", "over", *_EVENT_CHANGES))
    at = w.number(raw, "at", SECONDS)
    changes = [key for key in _EVENT_CHANGES if key in raw]
    if len(changes) != 1:
        raise InvalidValueError(
            f"{w.source}: {w.section}", changes or None, "exactly one change: " + ", ".join(_EVENT_CHANGES)
        )
    change = changes[0]
    if change == "base_used":
        if "guest" in raw:
            raise w.error("guest", raw["guest"], "no guest: base_used is the host's")
        base_used = w.size(raw, "base_used")
        if base_used + host.reserve >= host.ram:
            raise w.error("base_used", raw["base_used"], "base_used + reserve below the host's ram")
        return Event(at=at, base_used=base_used, over=w.number(raw, "over", SECONDS, 0.0))
    if "over" in raw:
        raise w.error("over", raw["over"], "nothing: only a base_used change takes time")
    guest = w.require(raw, "guest")
    if guest not in guests:
        raise w.error("guest", guest, "the name of a guest of this scenario (count > 1: name-01 ...)")
    return Event(at=at, guest=guest, **{change: w.flag(raw, change, None)})


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
    noise = w.number(t, "noise", FRACTION, 0.0)
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
                start=w.number(t, "start", SECONDS, 0.0),
                length=w.number(t, "length", SECONDS, run.duration),
            )
        case "sine":
            shape = Sine(
                mean=w.size(t, "mean"),
                amplitude=w.size(t, "amplitude"),
                period=w.number(t, "period", PERIOD),
                phase=w.number(t, "phase", PHASE, 0.0),
            )
        case "diurnal":
            shape = Diurnal(
                low=w.size(t, "low"),
                high=w.size(t, "high"),
                peak_hour=w.number(t, "peak_hour", HOUR, 14.0),
                period=w.number(t, "period", PERIOD, SECONDS_PER_DAY),
            )
        case "spikes":
            # A burst or a gap shorter than a step cannot be seen, and would let a typo (every = 1e-300)
            # draw astronomically many arrivals.
            at_least_a_step = Range(run.step, MAX_SECONDS, unit="seconds")
            shape = Spikes(
                base=w.size(t, "base"),
                height=w.size(t, "height"),
                every=w.number(t, "every", at_least_a_step),
                length=w.number(t, "length", at_least_a_step),
            )
        case _:
            interpolate = w.choice(t, "interpolate", "linear", INTERPOLATIONS)
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
        at = w.number({"points": pair[0]}, "points", SECONDS)
        size = w.size({"points": pair[1]}, "points")
        if points and at <= points[-1][0]:
            raise w.error("points", pair, accepted)
        points.append((at, size))
    return tuple(points)


def _load_trace(w: _Where, file: Any, base_dir: Path, interpolate: Interpolation) -> Trace:
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
        if len(row) != 2 or not SECONDS.accepts(at) or (times and at <= times[-1]):
            raise InvalidValueError(f"{w.what('file')} ({where})", row, accepted)
        value = parse_size(row[1].strip(), default_unit=1, what=f"{w.what('file')} ({where}) bytes")
        if value > MAX_SIZE:
            raise InvalidValueError(f"{w.what('file')} ({where}) bytes", row[1], f"at most {MAX_SIZE} bytes")
        values.append(value)
        times.append(at)
    if not times:
        raise w.error("file", file, f"{accepted}; {path} has no rows")
    return Trace(times=tuple(times), values=tuple(values), source=str(path), interpolate=interpolate)
