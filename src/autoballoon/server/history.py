"""A short memory of each VM for the dashboard's charts, and the rates Prometheus gauges need.

The controller keeps only its last tick; an operator wants to see the last minutes. A sampler thread
looks at the controller's view a few times a second and, when a new tick has happened, appends one point
per VM to a fixed-size ring. Rates (swap-in, major faults) come from the cumulative counters of two
successive samples, so they are exact over whatever interval the sampler saw.
"""

from __future__ import annotations

import itertools
import math
import threading
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from autoballoon.model import GuestSnapshot, HostSnapshot

#: The series a chart draws, in the order the page expects them.
SERIES = ("max", "target", "actual", "used")


class Point(NamedTuple):
    """One VM at one tick.

    The rings keep each point as a plain tuple (``tuple(point)``): Python's garbage collector stops
    tracking an exact tuple that holds only numbers, and a 1,000-VM daemon keeps 240,000 points. As
    tracked objects they made every full collection (which runs in whatever thread allocates, the
    controller's tick included) scan them all.
    """

    time: float
    max: int
    target: int
    actual: int | None
    used: int | None
    swap_in_bps: float | None
    major_faults_ps: float | None


TIME = Point._fields.index("time")
#: Where each chart series sits in a stored point.
COLUMN = {name: Point._fields.index(name) for name in SERIES}


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


class CoarseRing:
    """A fixed ring of chart points (``t`` and :data:`SERIES`) in one array of floats: the long windows'
    history costs 8 bytes a figure whatever the VM count, where tuples of Python ints cost about 25.
    An unknown figure is NaN inside and ``None`` outside."""

    WIDTH = 1 + len(SERIES)

    def __init__(self, points: int) -> None:
        self._points = points
        self._data = array("d", [math.nan]) * (points * self.WIDTH)
        self._count = 0  # points ever added; the newest is at (count - 1) % points

    @property
    def last_time(self) -> float | None:
        return self._data[((self._count - 1) % self._points) * self.WIDTH] if self._count else None

    def add(self, p: Point) -> None:
        at = (self._count % self._points) * self.WIDTH
        row = (p.time, *(getattr(p, name) for name in SERIES))
        for i, v in enumerate(row):
            self._data[at + i] = math.nan if v is None else float(v)
        self._count += 1

    def series(self, since: float | None) -> dict[str, list[Any]]:
        n = min(self._count, self._points)
        first = self._count - n
        cols: list[list[Any]] = [[] for _ in range(self.WIDTH)]
        for k in range(first, self._count):
            at = (k % self._points) * self.WIDTH
            if since is not None and self._data[at] <= since:
                continue
            cols[0].append(self._data[at])
            for i in range(1, self.WIDTH):
                v = self._data[at + i]
                cols[i].append(None if math.isnan(v) else int(v))
        return {"t": cols[0], **{name: cols[1 + i] for i, name in enumerate(SERIES)}}


class History:
    """Per-VM rings of :class:`Point`, shared between the sampler and request threads; with
    ``coarse_points``, also a coarse ring per VM of one point every ``coarse_period_s``."""

    def __init__(self, points: int, coarse_points: int = 0, coarse_period_s: float = 60.0) -> None:
        self._points = points
        self._coarse_points = coarse_points
        self._coarse_period = coarse_period_s
        self._coarse: dict[str, CoarseRing] = {}
        self._lock = threading.Lock()
        self._rings: dict[str, deque[tuple[Any, ...]]] = {}
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
                point = point_of(g, snap.time, before.get(g.name), prev_time)
                ring.append(tuple(point))
                if self._coarse_points:
                    coarse = self._coarse.get(g.name)
                    if coarse is None:
                        coarse = self._coarse[g.name] = CoarseRing(self._coarse_points)
                    last = coarse.last_time
                    if last is None or snap.time - last >= self._coarse_period:
                        coarse.add(point)
            for name in list(self._rings):
                if name not in live:
                    del self._rings[name]
                    self._coarse.pop(name, None)
            self._last = snap
            self.version += 1
            return True

    def clear(self) -> None:
        """Forget everything (the backend was replaced, or a test starts afresh)."""
        with self._lock:
            self._rings.clear()
            self._coarse.clear()
            self._last = None
            self.version += 1

    def latest(self, vm: str) -> Point | None:
        with self._lock:
            ring = self._rings.get(vm)
            return Point(*ring[-1]) if ring else None

    @property
    def last_time(self) -> float | None:
        """The time of the newest sample (None before the first)."""
        with self._lock:
            return self._last.time if self._last is not None else None

    def coarse_series(self, vm: str, since: float | None = None) -> dict[str, list[Any]]:
        """The VM's coarse history as :meth:`series` gives the fine one (empty without a coarse ring)."""
        with self._lock:
            coarse = self._coarse.get(vm)
            if coarse is not None:
                return coarse.series(since)
        return {"t": [], **{name: [] for name in SERIES}}

    def series(self, vm: str, since: float | None = None) -> dict[str, list[Any]]:
        """The VM's history as columns (``t`` plus :data:`SERIES`): compact JSON for the page's charts;
        with ``since``, only the points after that time (read from the newest back, so a poll that
        wants one new point does not copy the whole ring)."""
        with self._lock:
            whole = self._rings.get(vm, ())
            if since is None:
                ring = list(whole)
            else:
                ring = list(itertools.takewhile(lambda p: p[TIME] > since, reversed(whole)))
                ring.reverse()
        return {
            "t": [p[TIME] for p in ring],
            **{name: [p[COLUMN[name]] for p in ring] for name in SERIES},
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
