"""Renderings shared by every client until the daemon's state moves on, each rendered once.

Twenty dashboards polling a 1,000-VM daemon ask for the same bytes many times per tick, and a rendering
of ``/metrics`` or of the VM list at that size costs a tenth of a second of the one interpreter the
controller also runs on. So each rendering is kept with the version of the state it shows, and while a
rendering is under way the other requests for the same thing wait for it rather than render it again
("single flight"): the cost is one rendering per tick per kind, whatever the number of clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class Renders:
    """Bytes by key, each valid for one state ``version``, optionally reused for ``max_age_s`` more.

    At most ``max_keys`` renderings are kept (the oldest kept goes first): a key that comes from the
    request, such as the dashboard's ``since``, would otherwise keep one rendering per value a client
    cares to send until the state moves on.
    """

    def __init__(self, max_keys: int | None = None) -> None:
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._done: dict[Hashable, tuple[Hashable, float, bytes]] = {}
        self._flights: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        """How many renderings are kept."""
        with self._lock:
            return len(self._done)

    def get(
        self, key: Hashable, version: Hashable, render: Callable[[], bytes], *, max_age_s: float = 0.0
    ) -> bytes:
        """The rendering of ``key`` at ``version``: from the cache when it has it (or one at most
        ``max_age_s`` old, of any version), else rendered now, by one thread for all that ask."""
        hit = self._fresh(key, version, max_age_s)
        if hit is not None:
            return hit
        asked = time.monotonic()
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            # Rendered by the thread we waited for, after we asked: that is as new as ours would be. (If
            # the state moved on meanwhile, rendering again would make every waiter re-render in turn:
            # on a fast simulated host, whose state moves every few milliseconds, until they time out.)
            hit = self._fresh(key, version, max_age_s, since=asked)
            if hit is not None:
                return hit
            try:
                body = render()
            except BaseException:
                self._land(key, flight)
                raise
            self._land(key, flight, version, body)
            return body

    def _land(
        self, key: Hashable, flight: threading.Lock, version: Hashable = None, body: bytes | None = None
    ) -> None:
        """End ``key``'s flight, keeping its rendering if there is one. A flight lasts one rendering
        (those waiting on it hold its lock), so flights are bounded by the requests in progress."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if body is None:
                return
            # Another version's renderings will not be asked for again (the state only moves on):
            # dropping them bounds the cache by the kinds of rendering, not by the requests seen.
            for old in [k for k, (v, _, _) in self._done.items() if v != version]:
                del self._done[old]
            self._done.pop(key, None)  # kept last: the oldest kept goes first
            self._done[key] = (version, time.monotonic(), body)
            while self._max_keys is not None and len(self._done) > self._max_keys:
                del self._done[next(iter(self._done))]

    def _fresh(
        self, key: Hashable, version: Hashable, max_age_s: float, since: float | None = None
    ) -> bytes | None:
        with self._lock:
            hit = self._done.get(key)
        if hit is None:
            return None
        seen, born, body = hit
        if seen == version or time.monotonic() - born < max_age_s or (since is not None and born >= since):
            return body
        return None
