"""Click parameter types that speak the project's units, so a bad value is a usage error (exit 2)."""

from __future__ import annotations

from typing import Any

import click

from autoballoon.errors import InvalidValueError
from autoballoon.units import parse_percent, parse_size


class SizeType(click.ParamType):
    """A virsh-style size: bare number = KiB; K/M/G/T(iB) powers of 1024; KB/MB/GB/TB powers of 1000."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_size(value, what=param.human_readable_name if param else "size")
        except InvalidValueError as e:
            self.fail(str(e), param, ctx)


class PercentType(click.ParamType):
    """``20`` or ``20%`` → 0.2."""

    name = "PCT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_percent(value, what=param.human_readable_name if param else "percentage")
        except InvalidValueError as e:
            self.fail(str(e), param, ctx)


SIZE = SizeType()
PERCENT = PercentType()
ON_OFF = click.Choice(["on", "off"])
