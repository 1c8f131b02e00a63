"""Click parameter types that speak the project's units, so a bad value is a usage error (exit 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from autoballoon.constraints import COUNT, SHARES, STATS_PERIOD, Range
from autoballoon.errors import InvalidValueError
from autoballoon.units import parse_buffer, parse_size, plain_number

if TYPE_CHECKING:  # click 8.2 made ParamType generic; older clicks cannot subscript it at run time
    _Size = click.ParamType[int, Any]
    _Percent = click.ParamType[float, Any]
    _Number = click.ParamType[int | float, Any]
else:
    _Size = _Percent = _Number = click.ParamType


class SizeType(_Size):
    """A virsh-style size: bare number = KiB; K/M/G/T(iB) powers of 1024; KB/MB/GB/TB powers of 1000."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_size(value, what=param.human_readable_name if param else "size")
        except InvalidValueError as e:
            self.fail(str(e), param, ctx)


class BufferType(_Percent):
    """A buffer: ``0.2`` or ``20%`` → 0.2, as the config file and the API take it (see
    :func:`autoballoon.units.parse_buffer`)."""

    name = "FRACTION|PCT%"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_buffer(value, what=param.human_readable_name if param else "buffer")
        except InvalidValueError as e:
            self.fail(str(e), param, ctx)


class RangeType(_Number):
    """A number within one of :mod:`autoballoon.constraints`' ranges, refused with the same words as the
    config file and the API use for it."""

    def __init__(self, rng: Range) -> None:
        self.rng = rng
        self.name = "N" if rng.whole else "X"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        what = param.human_readable_name if param else "value"
        if isinstance(value, int | float) and not isinstance(value, bool):
            number: int | float = value
        else:
            text = str(value).strip()
            try:
                number = plain_number(text, whole=self.rng.whole)
            except ValueError:
                self.fail(str(InvalidValueError(what, value, self.rng.describe())), param, ctx)
        try:
            self.rng.check(number, what)
        except InvalidValueError as e:
            self.fail(str(e), param, ctx)
        return number


SIZE = SizeType()
SHARES_TYPE = RangeType(SHARES)
COUNT_TYPE = RangeType(COUNT)
STATS_PERIOD_TYPE = RangeType(STATS_PERIOD)
BUFFER_TYPE = BufferType()
ON_OFF = click.Choice(["on", "off"])
