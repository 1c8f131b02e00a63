"""Request bodies of the JSON API, turned into checked values before anything else looks at them.

Decisions, documented for API users (docs/api.md repeats them):

- A body is one JSON object; an unknown key is refused (a typo must not silently do nothing).
- Sizes are integers of **bytes**, or strings with a unit parsed like the command line's except that a
  bare number means bytes (``"2GiB"``, ``"512MiB"``, ``"2147483648"``). Floats and booleans are refused.
- ``buffer`` is a fraction from 0 to 1 as ``GET`` shows it (``0.2``), or a percentage string (``"20%"``),
  as the command line and the config file take it.
- ``null`` for a policy field means "unset: use the daemon's default".

Every refusal is an :class:`~autoballoon.errors.InvalidValueError` whose ``what`` is the JSON key (or
``body`` when the body as a whole is wrong). Hostile bodies are refused the same way, never with a 500:
nesting deeper than the parser's recursion limit, integers with thousands of digits (which Python refuses
to convert, and no size or count needs), ``NaN``/``Infinity``, and size strings longer than any real one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.units import BUFFER_FORMS, parse_buffer, parse_size

T = TypeVar("T")
SIZE_FORMS = 'an integer of bytes, or a string with a unit such as "2GiB" or "512MiB" (bare = bytes)'
POLICY_KEYS = ("min_bytes", "max_bytes", "shares", "buffer", "exclude")
TARGET_KEY = "target_bytes"
FORCE_KEY = "force"
#: The most digits a JSON integer may have: 2**63 (the largest size) has 19, so 24 refuses nothing real
#: while keeping Python from converting (and later printing) numbers thousands of digits long.
MAX_INT_DIGITS = 24
#: The longest size string read (``"9223372036854775807 bytes"`` is 25 characters).
MAX_SIZE_TEXT = 40
#: How much of a bad body an error message quotes.
PREVIEW_CHARS = 60


class Described:
    """A value shown in an error by what it is, not by its text (a nested array, a 5,000-digit number):
    the message stays short and printing it can neither recurse deeply nor exceed Python's digit limit."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __repr__(self) -> str:
        return self.description


def _parse_int(text: str) -> int | Described:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return Described(f"a {digits}-digit number")
    return int(text)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a refusal naming what is wrong with it."""
    try:
        value = json.loads(body.decode("utf-8"), parse_int=_parse_int, parse_constant=_refuse_constant)
    except RecursionError:
        too_deep = Described("a JSON value nested too deep")
        raise InvalidValueError("body", too_deep, "one flat JSON object") from None
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise InvalidValueError("body", _preview(body), f"one JSON object ({e})") from None
    if not isinstance(value, dict):
        raise InvalidValueError("body", _preview(body), 'one JSON object, like {"target_bytes": 1073741824}')
    return value


def _preview(body: bytes) -> str:
    text = body[:PREVIEW_CHARS].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > PREVIEW_CHARS else "")


def _shown(value: Any) -> Any:
    """``value`` as an error message may quote it: containers by their kind, long strings cut."""
    if isinstance(value, dict):
        return Described("a JSON object")
    if isinstance(value, list):
        return Described("a JSON array")
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return value[:PREVIEW_CHARS] + "..."
    return value


def _only(obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidValueError(
                _shown(key), _shown(obj[key]), "no such field; accepted: " + ", ".join(allowed)
            )


def size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidValueError(key, _shown(value), SIZE_FORMS)
    if isinstance(value, int) and value < 0:
        raise InvalidValueError(key, value, "a size that is not negative; " + SIZE_FORMS)
    if isinstance(value, str) and len(value) > MAX_SIZE_TEXT:
        raise InvalidValueError(key, _shown(value), f"at most {MAX_SIZE_TEXT} characters: " + SIZE_FORMS)
    return parse_size(value, default_unit=1, what=key)


def _shares(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError("shares", _shown(value), "a whole number")
    return value


def _buffer(value: Any) -> float:
    """A fraction from 0 to 1 or a percentage string, as the command line and the config take it."""
    if isinstance(value, str) and len(value) > MAX_SIZE_TEXT:
        raise InvalidValueError("buffer", _shown(value), BUFFER_FORMS)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidValueError("buffer", _shown(value), BUFFER_FORMS)
    return parse_buffer(value, what="buffer")


def _exclude(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValueError("exclude", _shown(value), "true or false")
    return value


def policy(base: GuestPolicy, obj: dict[str, Any]) -> GuestPolicy:
    """``base`` with the fields the request sets (only those given) replaced, each parsed; ``null``
    unsets one; ``{}`` is refused."""
    _only(obj, POLICY_KEYS)
    if not obj:
        raise InvalidValueError("body", "{}", "at least one of " + ", ".join(POLICY_KEYS))

    def given(key: str, parse: Callable[[Any], T], current: T | None) -> T | None:
        if key not in obj:
            return current
        return None if obj[key] is None else parse(obj[key])

    return GuestPolicy(
        min_bytes=given("min_bytes", lambda v: size("min_bytes", v), base.min_bytes),
        max_bytes=given("max_bytes", lambda v: size("max_bytes", v), base.max_bytes),
        shares=given("shares", _shares, base.shares),
        buffer=given("buffer", _buffer, base.buffer),
        exclude=_exclude(obj["exclude"]) if "exclude" in obj else base.exclude,
    )


def target(obj: dict[str, Any]) -> tuple[int, bool]:
    """The requested balloon target in bytes, and whether it is forced below what the guest uses."""
    _only(obj, (TARGET_KEY, FORCE_KEY))
    if TARGET_KEY not in obj:
        raise InvalidValueError(TARGET_KEY, None, "a required field: " + SIZE_FORMS)
    force = obj.get(FORCE_KEY, False)
    if not isinstance(force, bool):
        raise InvalidValueError(FORCE_KEY, _shown(force), "true or false")
    return size(TARGET_KEY, obj[TARGET_KEY]), force
