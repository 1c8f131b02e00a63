"""Time as the controller sees it: real (monotonic) in production, virtual in the simulator.

The controller only ever calls ``now()``, ``wall()`` and ``sleep()``. A virtual clock makes a simulated
day run in seconds, and makes every controller test deterministic. Listeners let the simulator advance its
world whenever virtual time passes, so "sleeping" on a virtual clock *is* stepping the simulation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds on the clock guest stats are stamped with (epoch for real hosts)."""
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Let ``seconds`` pass, or less once ``stop`` is set (SIGTERM must not wait out an interval)."""
        ...


class RealClock:
    """``time.monotonic`` for intervals, ``time.time`` for stats age (QEMU stamps stats in epoch seconds)."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> None:
        if seconds <= 0:
            return
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)


class VirtualClock:
    """A clock that moves only when slept on.

    ``speed`` = None: sleeping returns at once (tests, evaluation). ``speed`` = k: sleeping ``s`` virtual
    seconds also waits ``s / k`` real seconds, so a demo runs k times faster than life but still live.
    Each registered listener is called with the virtual seconds that passed (the simulator steps itself).
    """

    def __init__(self, start: float = 0.0, *, speed: float | None = None) -> None:
        self._now = start
        self.speed = speed
        self._listeners: list[Callable[[float], None]] = []

    def on_advance(self, listener: Callable[[float], None]) -> None:
        self._listeners.append(listener)

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> None:
        """With a ``speed``, wait the real share of ``seconds``; once ``stop`` is set, return at once,
        having let pass only the virtual time its real wait stood for."""
        if seconds <= 0:
            return
        if self.speed:
            real = seconds / self.speed
            if stop is None:
                time.sleep(real)
            else:
                began = time.monotonic()
                if stop.wait(real):
                    seconds = min(seconds, (time.monotonic() - began) * self.speed)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move virtual time forward without any real wait."""
        for listener in self._listeners:
            listener(seconds)
        self._now += seconds
