"""The array types and the integer helpers the allocation's vector code shares."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
_N = TypeVar("_N", int, I64)


def align_up(n: _N, align: int) -> _N:
    return -(-n // align) * align


def align_down(n: I64, align: int) -> I64:
    return n // align * align


def clip(n: I64, low: I64, high: I64) -> I64:
    """``n`` within ``[low, high]``, ``high`` winning where they cross (as :func:`safety.clamp`)."""
    return np.minimum(np.maximum(n, low), high)
