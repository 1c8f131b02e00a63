"""Request bodies of the JSON API, turned into checked values before anything else looks at them.

Decisions, documented for API users (docs/api.md repeats them):

- A body is one JSON object; an unknown key is refused (a typo must not silently do nothing).
- Sizes are integers of **bytes**, or strings with a unit parsed like the command line's except that a
  bare number means bytes (``"2GiB"``, ``"512MiB"``, ``"2147483648"``). Floats and booleans are refused.
- ``buffer`` is a fraction as ``GET`` shows it (``0.2``), or a percentage string (``"20%"``).
- ``null`` for a policy field means "unset: use the daemon's default".

Every refusal is an :class:`~autoballoon.errors.InvalidValueError` whose ``what`` is the JSON key.
"""

from __future__ import annotations

import json
from typing import Any

from autoballoon.errors import InvalidValueError
from autoballoon.units import parse_percent, parse_size

SIZE_FORMS = 'an integer of bytes, or a string with a unit such as "2GiB" or "512MiB" (bare = bytes)'
POLICY_KEYS = ("min_bytes", "max_bytes", "shares", "buffer", "exclude")
TARGET_KEY = "target_bytes"


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a refusal naming what is wrong with it."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidValueError("body", _preview(body), f"one JSON object ({e})") from None
    if not isinstance(value, dict):
        raise InvalidValueError("body", _preview(body), 'one JSON object, like {"target_bytes": 1073741824}')
    return value


def _preview(body: bytes, limit: int = 60) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > limit else "")


def _only(obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidValueError(key, obj[key], "no such field; accepted: " + ", ".join(allowed))


def size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidValueError(key, value, SIZE_FORMS)
    if isinstance(value, int) and value < 0:
        raise InvalidValueError(key, value, "a size that is not negative; " + SIZE_FORMS)
    return parse_size(value, default_unit=1, what=key)


def _shares(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError("shares", value, "a whole number")
    return value


def _buffer(value: Any) -> float:
    if isinstance(value, str):
        return parse_percent(value, what="buffer")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError("buffer", value, 'a fraction like 0.2, or a percentage string like "20%"')
    return float(value)


def _exclude(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValueError("exclude", value, "true or false")
    return value


def policy_changes(obj: dict[str, Any]) -> dict[str, object]:
    """The policy fields a request sets (only those given), each parsed; ``{}`` is refused."""
    _only(obj, POLICY_KEYS)
    if not obj:
        raise InvalidValueError("body", "{}", "at least one of " + ", ".join(POLICY_KEYS))
    parsers = {
        "min_bytes": lambda v: size("min_bytes", v),
        "max_bytes": lambda v: size("max_bytes", v),
        "shares": _shares,
        "buffer": _buffer,
        "exclude": _exclude,
    }
    changes: dict[str, object] = {}
    for key, value in obj.items():
        changes[key] = None if value is None and key != "exclude" else parsers[key](value)
    return changes


def target(obj: dict[str, Any]) -> int:
    """The requested balloon target in bytes."""
    _only(obj, (TARGET_KEY,))
    if TARGET_KEY not in obj:
        raise InvalidValueError(TARGET_KEY, None, "a required field: " + SIZE_FORMS)
    return size(TARGET_KEY, obj[TARGET_KEY])
