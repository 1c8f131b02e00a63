"""Sizes at the edges of the program, written the way virsh writes them.

Inside autoballoon every size is an ``int`` of bytes. Only text from a user (command line, config, API)
and text for a user go through this module, so there is exactly one place that knows that a bare number
means KiB (virsh's convention) and that ``GB`` means 10**9 while ``GiB`` means 2**30.
"""

from __future__ import annotations

import re
from fractions import Fraction

from autoballoon.errors import InvalidValueError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

#: The largest size accepted anywhere: libvirt stores sizes as unsigned 64-bit KiB, numpy as int64 bytes.
MAX_BYTES = 2**63 - 1

_UNITS: dict[str, int] = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "k": KiB,
    "kib": KiB,
    "m": MiB,
    "mib": MiB,
    "g": GiB,
    "gib": GiB,
    "t": TiB,
    "tib": TiB,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}

ACCEPTED_FORMS = (
    "a whole or decimal number with an optional unit: bare number = KiB (as virsh); "
    "K/KiB, M/MiB, G/GiB, T/TiB = powers of 1024; KB, MB, GB, TB = powers of 1000; B/bytes = bytes "
    "(for example 524288, 512M, 1.5GiB, 2GB)"
)

#: The binary units text for a user is written in, largest first.
_BINARY_UNITS = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))

_PERCENT_FORMS = "a percentage from 0 to 1000, like 20 or 20%"

#: A number as the accepted forms write it: ASCII digits with an optional decimal fraction. ``re.ASCII``
#: matters: without it ``\d`` is any Unicode digit (``٢``, ``２``, ``𝟐``), and ``float``/``int``/``Fraction``
#: take those too, as well as underscores (``1_0``) and exponents.
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_SIZE_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>[A-Za-z]*)\s*$", re.ASCII)
_PERCENT_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*%?\s*$", re.ASCII)
_WHOLE_RE = re.compile(r"^\s*-?\d+\s*$", re.ASCII)
_DECIMAL_RE = re.compile(rf"^\s*-?(?:{_NUMBER})\s*$", re.ASCII)
#: Digits a size may have: 8 EiB is 19 digits in bytes, a fraction of a unit needs no more than that
#: either. Longer numbers are refused before any arithmetic (Python refuses to convert over 4300 digits
#: to an int, with a ValueError that used to escape as a traceback).
_MAX_DIGITS = 40


def parse_size(text: str | int, *, default_unit: int = KiB, what: str = "size") -> int:
    """Parse a virsh-style size into bytes.

    ``default_unit`` is what a bare number means: KiB on the command line (virsh), but a config file or
    the JSON API may choose bytes. Raises :class:`InvalidValueError` naming the input and the accepted
    forms; never returns a negative, fractional or out-of-range value.
    """
    if isinstance(text, bool):
        raise InvalidValueError(what, text, ACCEPTED_FORMS)
    if isinstance(text, int):
        value = text * default_unit
        if text < 0 or value > MAX_BYTES:
            raise InvalidValueError(what, text, f"a whole number from 0 to {MAX_BYTES // default_unit}")
        return value
    if not isinstance(text, str):
        raise InvalidValueError(what, text, ACCEPTED_FORMS)
    match = _SIZE_RE.match(text)
    if match is None:
        raise InvalidValueError(what, text, ACCEPTED_FORMS)
    if len(match.group("num")) > _MAX_DIGITS:
        raise InvalidValueError(what, text, f"a number of at most {_MAX_DIGITS} digits (sizes end at 8 EiB)")
    unit_text = match.group("unit").lower()
    if unit_text == "":
        scale = default_unit
    elif unit_text in _UNITS:
        scale = _UNITS[unit_text]
    else:
        raise InvalidValueError(what, text, f"unknown unit {match.group('unit')!r}; {ACCEPTED_FORMS}")
    exact = Fraction(match.group("num")) * scale
    if exact.denominator != 1:
        raise InvalidValueError(what, text, "a size that is a whole number of bytes; " + ACCEPTED_FORMS)
    if exact > MAX_BYTES:
        raise InvalidValueError(what, text, f"a size of at most {MAX_BYTES} bytes (8 EiB)")
    return int(exact)


def format_size(n: int) -> str:
    """Exact, re-parseable text for ``n`` bytes: the largest binary unit that divides it, else bytes."""
    if n < 0:
        raise ValueError(f"sizes are never negative: {n}")
    for suffix, scale in _BINARY_UNITS:
        if n and n % scale == 0:
            return f"{n // scale}{suffix}"
    return f"{n}B"


def human(n: int | None, *, digits: int = 1) -> str:
    """Approximate text for tables (``1.5 GiB``); ``-`` for an unknown size."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for suffix, scale in _BINARY_UNITS:
        if n >= scale:
            return f"{sign}{n / scale:.{digits}f} {suffix}"
    return f"{sign}{n} B"


def parse_percent(text: str | float | int, *, what: str = "percentage") -> float:
    """Parse a percentage, ``20`` or ``20%``, as the fraction 0.2 (a bare number is percent, never a
    fraction: ``0.2`` is 0.2 %). Accepts 0 to 1000 percent."""
    raw = text
    if isinstance(text, bool):
        raise InvalidValueError(what, raw, _PERCENT_FORMS)
    if isinstance(text, str):
        match = _PERCENT_RE.match(text)
        if match is None:
            raise InvalidValueError(what, raw, _PERCENT_FORMS)
        number = float(match.group("num"))
    else:
        number = float(text)
    if not (0.0 <= number <= 1000.0):
        raise InvalidValueError(what, raw, _PERCENT_FORMS)
    return number / 100.0


BUFFER_FORMS = "a fraction from 0 to 1 like 0.2, or a percentage like 20% (up to 1000%)"


def parse_buffer(value: str | float | int, *, what: str = "buffer") -> float:
    """A buffer as every face takes it (command line, config file, API, scenario files): a bare number
    is a **fraction** from 0 to 1 (``0.2``), a number with ``%`` a percentage (``20%``, up to 1000 %).

    A bare number above 1 is refused, not read as a fraction or a percentage: the command line read
    ``0.2`` as 0.2 % while the config read it as 20 %, so a value copied from one to the other was off
    by a factor of 100. Refusing ``20`` says so instead of guessing which was meant."""
    raw = value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidValueError(what, raw, BUFFER_FORMS)
    if isinstance(value, str):
        if value.strip().endswith("%"):
            try:
                return parse_percent(value, what=what)
            except InvalidValueError:
                raise InvalidValueError(what, raw, BUFFER_FORMS) from None
        try:
            number = float(plain_number(value.strip(), whole=False))
        except ValueError:
            raise InvalidValueError(what, raw, BUFFER_FORMS) from None
    else:
        number = float(value)
    if not (0.0 <= number <= 1.0):  # also refuses nan
        raise InvalidValueError(what, raw, BUFFER_FORMS)
    return number


def plain_number(text: str, *, whole: bool) -> int | float:
    """``text`` as an ``int`` (``whole``) or a ``float``, written in ASCII decimal with an optional sign
    (``12``, ``-3``, ``0.5``); ValueError otherwise. ``int()`` and ``float()`` alone also take ``1_0``,
    Unicode digits (``١٠``) and, for ``float``, ``1e3``, ``inf`` and ``nan``: none of which the documented
    forms allow."""
    if len(text) > _MAX_DIGITS or not (_WHOLE_RE if whole else _DECIMAL_RE).match(text):
        raise ValueError(f"not a plain decimal number: {text!r}")
    return int(text) if whole else float(text)
