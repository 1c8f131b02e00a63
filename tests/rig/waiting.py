"""Poll until a condition holds: real guests answer in their own time, tests give them a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.25


def wait_for(
    probe: Callable[[], T], accept: Callable[[T], bool], timeout: float, what: str
) -> tuple[T, float]:
    """Call ``probe`` until ``accept`` likes its value; returns (value, seconds). AssertionError on timeout.

    The last value seen is in the error, so a failing test says how far the guest got.
    """
    start = time.monotonic()
    while True:
        value = probe()
        elapsed = time.monotonic() - start
        if accept(value):
            return value, elapsed
        if elapsed > timeout:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s; last value {value!r}")
        time.sleep(POLL_S)
