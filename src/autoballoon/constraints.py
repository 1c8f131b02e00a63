"""Typed constraints: what each kind of number may be, written once and checked wherever a value enters.

A value that reaches the policy out of range does not fail where it came in: it fails ticks later, deep in
arithmetic (a zero alignment divides by zero, a decay time of 0 divides by zero, an interval of 1e12 s
overflows a timer). So every number the daemon runs on carries its range in its type::

    shares: Shares | None = None          # Annotated[int, Range(1, 1_000_000, whole=True)]

and :func:`check_fields` (called by the frozen dataclass's ``__post_init__``) refuses an instance with a
field outside it, so ``Tunables``, ``HealthTunables`` and ``GuestPolicy`` cannot exist invalid. The same
:class:`Range` objects serve every edge: the config file and the HTTP payloads through pydantic (a
:class:`Range` is a pydantic validator with the same message), the CLI, libvirt metadata and scenario
files through :meth:`Range.check`. A refusal names the value and says what is accepted; NaN and
infinities are outside every range (every range has two finite ends, and NaN compares false).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, TypeGuard, get_args, get_origin

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from autoballoon.errors import InvalidValueError
from autoballoon.units import GiB, MiB, format_size

#: The longest time any setting may name: a year. Nothing in autoballoon waits, remembers or holds
#: longer, and every timer must accept it (``threading.TIMEOUT_MAX`` is about 292 years; an interval
#: of 1e12 s overflowed it and killed the daemon).
MAX_SECONDS = 365 * 86_400.0
#: The largest per-VM buffer (config, CLI, API, metadata, scenarios): 10 = 1000 % above demand. Past that
#: a "buffer" is just a VM that is never ballooned, which ``exclude`` says plainly.
MAX_BUFFER = 10.0
#: The largest weight of one VM in the water-fill: more is surely a typo (the default is 1000).
MAX_SHARES = 1_000_000
#: The lowest balloon target anybody may set, by hand (CLI, API) or by the daemon (whose own
#: ``global_min`` may only be higher): below this a Linux guest thrashes or its OOM killer runs.
MIN_TARGET_BYTES = 128 * MiB
#: The largest size a setting may name: 1 PiB, more than any host has. A bound this far below int64's
#: 8 EiB leaves the policy's arithmetic room (a sum of a few sizes, a size times a rate or a factor),
#: which numpy's int64 arrays would otherwise wrap around silently.
MAX_SETTING_BYTES = 2**50
#: The fastest memory rate a setting may name (bytes per second): faster than any guest can touch memory,
#: and small enough that a rate times the longest time (a year, thrice: a reaction time sums three
#: settings) stays within int64.
MAX_BYTES_PER_S = 64 * GiB
#: The largest count (ring sizes, event counts): a bound only so that a typo cannot exhaust memory.
MAX_COUNT = 10_000_000

Unit = Literal["", "bytes", "bytes/s", "seconds", "fraction"]


class ConstraintError(InvalidValueError):
    """A field of a validated dataclass outside its constraint; ``field`` names it so that an edge can
    say which config key, API field or metadata attribute it came from."""

    def __init__(self, field: str, value: Any, accepted: str) -> None:
        self.field = field
        super().__init__(field, value, accepted)


@dataclass(frozen=True, slots=True)
class Range:
    """A finite number from ``low`` to ``high`` (either end open), whole or real, in ``unit``.

    Whole numbers must be ``int`` (a bool is refused, and so is 2.0: a count written as a float is a
    mistake somewhere); real numbers may be ``int`` or ``float``.
    """

    low: float
    high: float
    whole: bool = False
    unit: Unit = ""
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value: object) -> TypeGuard[int | float]:
        """Whether ``value`` is inside; as cheap as it can be, since policies are checked every tick."""
        if not (type(value) is int or (type(value) is float and not self.whole)):
            return False
        low, high = self.low, self.high
        if value < low or value > high:
            return False
        if value != value:  # NaN
            return False
        return not ((self.low_open and value == low) or (self.high_open and value == high))

    def _bound(self, x: float) -> str:
        if self.unit == "bytes/s":
            return format_size(int(x)) + "/s"
        return format_size(int(x)) if self.unit == "bytes" else f"{x:.15g}"

    def describe(self) -> str:
        """What is accepted, in words: 'a whole number from 1 to 1000000', 'a size from 1B to 1024TiB'..."""
        noun = {
            "": "a whole number" if self.whole else "a number",
            "bytes": "a size",
            "bytes/s": "a rate",
            "seconds": "a number of seconds",
            "fraction": "a fraction",
        }[self.unit]
        low, high = self._bound(self.low), self._bound(self.high)
        if self.low_open:
            return f"{noun} above {low} and {'below' if self.high_open else 'at most'} {high}"
        return f"{noun} from {low} to {'less than ' if self.high_open else ''}{high}"

    def check(self, value: object, what: str) -> None:
        """Raise :class:`~autoballoon.errors.InvalidValueError` naming ``what`` unless ``value`` is inside."""
        if not self.accepts(value):
            raise InvalidValueError(what, value, self.describe())

    def coerce(self, value: object) -> int | float:
        """``value`` as this range's type if it is inside (an int for a real range becomes a float);
        ``ValueError`` with :meth:`describe` otherwise (pydantic reports it under the field's name)."""
        if not self.whole and type(value) is int:
            value = float(value)
        if not self.accepts(value):
            raise ValueError(self.describe())
        return value

    # pydantic: ``Annotated[int, Range(...)]`` in a model validates with this range and this message.
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.coerce)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out: dict[str, Any] = {"type": "integer" if self.whole else "number", "description": self.describe()}
        out["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        out["exclusiveMaximum" if self.high_open else "maximum"] = self.high
        return out


# --- the kinds of values ---------------------------------------------------------------------------------
# Each range is named once; ``Annotated`` aliases put it on a field's type.
#: Any size in bytes, 0 included.
BYTES = Range(0, MAX_SETTING_BYTES, whole=True, unit="bytes")
#: A size that divides or steps something: at least one byte.
POSITIVE_BYTES = Range(1, MAX_SETTING_BYTES, whole=True, unit="bytes")
#: A per-VM memory limit (policy min and max): never below the lowest target anybody may set.
GUEST_BYTES = Range(MIN_TARGET_BYTES, MAX_SETTING_BYTES, whole=True, unit="bytes")
#: A memory rate: bytes per second.
BYTES_PER_S = Range(0, MAX_BYTES_PER_S, whole=True, unit="bytes/s")
#: A duration, 0 included (0 usually means "at once" or "never", as the field says).
SECONDS = Range(0, MAX_SECONDS, unit="seconds")
#: A duration something is divided by or waits on: above 0.
POSITIVE_SECONDS = Range(0, MAX_SECONDS, unit="seconds", low_open=True)
#: A share of something: 0 to 1.
FRACTION = Range(0, 1, unit="fraction")
#: A buffer or cushion as a multiple of demand: 0 to 10 (1000 %).
BUFFER = Range(0, MAX_BUFFER, unit="fraction")
#: A factor something is multiplied by: above 0, at most a million.
FACTOR = Range(0, 1e6, low_open=True)
#: A rate per second (faults, bytes): 0 or more, finite.
RATE = Range(0, 1e18)
#: A count of things: at least one.
COUNT = Range(1, MAX_COUNT, whole=True)
#: A VM's weight in the water-fill when the host is short: at least 1 (0 meant "floor only" in one place
#: of the policy and "weight 1" in another).
SHARES = Range(1, MAX_SHARES, whole=True)
#: Seconds between two guest stats reports: 0 (off) to a day.
STATS_PERIOD = Range(0, 86_400, whole=True, unit="seconds")

Bytes = Annotated[int, BYTES]
PositiveBytes = Annotated[int, POSITIVE_BYTES]
GuestBytes = Annotated[int, GUEST_BYTES]
BytesPerS = Annotated[int, BYTES_PER_S]
Seconds = Annotated[float, SECONDS]
PositiveSeconds = Annotated[float, POSITIVE_SECONDS]
Fraction = Annotated[float, FRACTION]
Buffer = Annotated[float, BUFFER]
Factor = Annotated[float, FACTOR]
Rate = Annotated[float, RATE]
Count = Annotated[int, COUNT]
Shares = Annotated[int, SHARES]
StatsPeriod = Annotated[int, STATS_PERIOD]


def range_of(annotation: Any) -> tuple[Range | None, bool]:
    """The :class:`Range` an annotation carries (None if none) and whether it also allows None."""
    optional = False
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Range):
                return meta, optional
    return None, optional


#: Per class: (field name, range, may be None) for every constrained field, resolved once.
_SPECS: dict[type, tuple[tuple[str, Range, bool], ...]] = {}
#: Per class and ordered pairs: a checking function compiled from the ranges (see :func:`check_fields`).
_CHECKERS: dict[type, Callable[[object], bool]] = {}


def field_ranges(cls: type) -> tuple[tuple[str, Range, bool], ...]:
    """Every numeric field of a dataclass with its range, in field order.

    A numeric field without a range is a programming error (a new tunable someone forgot to bound), so it
    fails here, at the first instance, in every test run, rather than at the operator's.
    """
    spec = _SPECS.get(cls)
    if spec is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        found = []
        for f in fields(cls):
            rng, optional = range_of(hints[f.name])
            if rng is not None:
                found.append((f.name, rng, optional))
            elif _numeric(hints[f.name]):
                raise TypeError(f"{cls.__name__}.{f.name} is a number without a Range (see constraints.py)")
        spec = _SPECS[cls] = tuple(found)
    return spec


def _numeric(annotation: Any) -> bool:
    args = get_args(annotation) if get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return annotation in (int, float) or any(a in (int, float) for a in args)


#: A rule between two fields: ``("interval_s", ">=", "min_interval_s")``; a refusal names the first.
Order = tuple[str, Literal["<=", ">="], str]


def _compile(cls: type, ordered: tuple[Order, ...]) -> Callable[[object], bool]:
    """A function that is True when every field of an instance is inside its range: the comparisons
    written out, field by field, with the bounds as constants. ``GuestPolicy`` is made for every VM on
    every tick, and a loop over the ranges cost three times as much as the object itself."""
    lines = ["def ok(o):"]
    for name, rng, optional in field_ranges(cls):
        kinds = "type(v) is int" if rng.whole else "(type(v) is float or type(v) is int)"
        low = f"{rng.low!r} {'<' if rng.low_open else '<='} v"
        high = f"v {'<' if rng.high_open else '<='} {rng.high!r}"
        test = f"{kinds} and {low} and {high}"
        lines.append(f"    v = o.{name}")
        lines.append(f"    if {'v is not None and ' if optional else ''}not ({test}): return False")
    for a, op, b in ordered:
        lines.append(f"    if o.{a} is not None and o.{b} is not None and not o.{a} {op} o.{b}: return False")
    lines.append("    return True")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)
    ok: Callable[[object], bool] = namespace["ok"]  # made by exec: its type is the one declared here
    return ok


def check_fields(obj: object, ordered: tuple[Order, ...] = ()) -> None:
    """Refuse ``obj`` (a dataclass) if a field is outside its range, or breaks a rule of ``ordered``
    (``("a", "<=", "b")``). Raises :class:`ConstraintError` naming the field."""
    ok = _CHECKERS.get(type(obj))  # a class always passes the same ``ordered``
    if ok is None:
        ok = _CHECKERS[type(obj)] = _compile(type(obj), ordered)
    if ok(obj):
        return
    for name, rng, optional in field_ranges(type(obj)):  # the slow path says which field, and why
        value = getattr(obj, name)
        if not (value is None and optional) and not rng.accepts(value):
            raise ConstraintError(name, value, rng.describe() + ("" if not optional else ", or unset"))
    for first, op, second in ordered:
        a, b = getattr(obj, first), getattr(obj, second)
        if a is not None and b is not None and not (a <= b if op == "<=" else a >= b):
            raise ConstraintError(first, a, f"{'at most' if op == '<=' else 'at least'} {second} ({b:g})")
    raise AssertionError(f"{type(obj).__name__}: compiled check and ranges disagree")  # pragma: no cover


def relabel(error: ConstraintError, name: Callable[[str], str]) -> InvalidValueError:
    """The same refusal under the name the caller knows the field by (a config key, an API field)."""
    return InvalidValueError(name(error.field), error.value, error.accepted)
