"""A short memory of each VM for the dashboard's charts, and the rates Prometheus gauges need.

The controller keeps only its last tick; an operator wants to see the last minutes. A sampler thread
looks at the controller's view a few times a second and, when a new tick has happened, appends one point
per VM to a fixed-size ring. Rates (swap-in, major faults) come from the cumulative counters of two
successive samples, so they are exact over whatever interval the sampler saw.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoballoon.model import GuestSnapshot, HostSnapshot

#: The series a chart draws, in the order the page expects them.
SERIES = ("max", "target", "actual", "used")


@dataclass(frozen=True, slots=True)
class Point:
    """One VM at one tick."""

    time: float
    max: int
    target: int
    actual: int | None
    used: int | None
    swap_in_bps: float | None
    major_faults_ps: float | None


def _rate(now: int | None, before: int | None, dt: float) -> float | None:
    if now is None or before is None or dt <= 0:
        return None
    return max(0, now - before) / dt  # a counter that went back (guest reboot) is a new start, not a rate


def point_of(g: GuestSnapshot, time: float, prev: GuestSnapshot | None, prev_time: float | None) -> Point:
    """The chart point of ``g``, with rates over the time since ``prev`` (the same VM one sample earlier)."""
    dt = time - prev_time if prev_time is not None else 0.0
    ps = prev.stats if prev is not None else None
    return Point(
        time=time,
        max=g.max_bytes,
        target=g.target_bytes,
        actual=g.actual_bytes,
        used=g.used_bytes,
        swap_in_bps=_rate(g.stats.swap_in, ps.swap_in if ps else None, dt),
        major_faults_ps=_rate(g.stats.major_faults, ps.major_faults if ps else None, dt),
    )


class History:
    """Per-VM rings of :class:`Point`, shared between the sampler and request threads."""

    def __init__(self, points: int) -> None:
        self._points = points
        self._lock = threading.Lock()
        self._rings: dict[str, deque[Point]] = {}
        self._last: HostSnapshot | None = None
        self.version = 0  # bumped on every new sample: a cheap key for caches of rendered pages

    def add(self, snap: HostSnapshot) -> bool:
        """Record ``snap`` if it is newer than the last one; VMs that are gone lose their history."""
        with self._lock:
            prev = self._last
            if prev is not None and snap.time <= prev.time:
                return False
            # By name once: a lookup per guest through HostSnapshot.guest() would be quadratic in VMs.
            before = {g.name: g for g in prev.guests} if prev is not None else {}
            prev_time = prev.time if prev is not None else None
            live = set()
            for g in snap.guests:
                live.add(g.name)
                ring = self._rings.get(g.name)
                if ring is None:
                    ring = self._rings[g.name] = deque(maxlen=self._points)
                ring.append(point_of(g, snap.time, before.get(g.name), prev_time))
            for name in list(self._rings):
                if name not in live:
                    del self._rings[name]
            self._last = snap
            self.version += 1
            return True

    def clear(self) -> None:
        """Forget everything (the backend was replaced, or a test starts afresh)."""
        with self._lock:
            self._rings.clear()
            self._last = None
            self.version += 1

    def latest(self, vm: str) -> Point | None:
        with self._lock:
            ring = self._rings.get(vm)
            return ring[-1] if ring else None

    def series(self, vm: str) -> dict[str, list[Any]]:
        """The VM's history as columns (``t`` plus :data:`SERIES`): compact JSON for the page's charts."""
        with self._lock:
            ring = list(self._rings.get(vm, ()))
        return {
            "t": [p.time for p in ring],
            "max": [p.max for p in ring],
            "target": [p.target for p in ring],
            "actual": [p.actual for p in ring],
            "used": [p.used for p in ring],
        }


class Sampler:
    """A daemon thread feeding a :class:`History` from a view function until stopped."""

    def __init__(self, history: History, snapshot: Callable[[], HostSnapshot | None], period_s: float):
        self._history = history
        self._snapshot = snapshot
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="autoballoon-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample_once(self) -> bool:
        snap = self._snapshot()
        return snap is not None and self._history.add(snap)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
