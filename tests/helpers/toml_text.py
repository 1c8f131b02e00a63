"""TOML text for generated documents (the standard library reads TOML but does not write it)."""

from __future__ import annotations

import json
import math
from typing import Any


class Raw(str):
    """TOML written as it is, for what Python cannot hold: a 5,000-digit integer, ``0x7f``, ``1_000``."""


def toml_value(value: Any) -> str:
    """One value as TOML: JSON's string escapes are TOML basic-string escapes; NaN and inf as TOML says."""
    if isinstance(value, Raw):
        return str.__str__(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"
