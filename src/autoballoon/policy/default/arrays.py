"""The array types and the helpers the policy's vector code shares: integer alignment, and reading
figures that may be unknown (``None``) into columns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
_N = TypeVar("_N", int, I64)
_V = TypeVar("_V")


def align_up(n: _N, align: int) -> _N:
    return -(-n // align) * align


def align_down(n: I64, align: int) -> I64:
    return n // align * align


def clip(n: I64, low: I64, high: I64) -> I64:
    """``n`` within ``[low, high]``, ``high`` winning where they cross (as :func:`safety.clamp`)."""
    return np.minimum(np.maximum(n, low), high)


def known_floats(xs: Sequence[float | None]) -> tuple[F64, Bools]:
    """Values that may be unknown as a column, 0.0 where unknown (``x or 0.0`` and ``if x`` of the
    per-VM rules read them so), and where they are known.

    Read as float64, where ``None`` is NaN: one conversion instead of a pass per value in Python, which
    the benchmark shows matters. Exact for byte counts and counters below 2**53 (8 PiB)."""
    values = np.array(xs, dtype=np.float64)
    known = ~np.isnan(values)
    return np.where(known, values, 0.0), known


def known_ints(xs: Sequence[int | None]) -> tuple[I64, Bools]:
    """Byte counts or counters that may be unknown: the values (0 where unknown; the rules read them
    only where they are known) and where they are known."""
    values, known = known_floats(xs)
    return values.astype(np.int64), known


def transpose(rows: Sequence[Any], getter: Callable[[Any], tuple[Any, ...]], width: int) -> list[Any]:
    """The figures ``getter`` reads of every row, one tuple per figure (in C: the benchmark shows a
    Python pass per figure and VM matters)."""
    return list(zip(*map(getter, rows), strict=True)) if rows else [()] * width


def optional(values: list[_V], known: Bools) -> list[_V | None]:
    """The values, ``None`` where not known (a column back into the records' fields)."""
    return [v if k else None for v, k in zip(values, known.tolist(), strict=True)]
