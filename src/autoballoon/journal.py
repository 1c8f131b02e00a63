"""The daemon's journal: one JSON object per line for every action and event, plus a ring in memory.

An operator must be able to answer "why did my VM lose 300 MiB at 03:12?" from the file alone, so every
action line carries the numbers the decision was based on (demand, the guest's MemAvailable, the host
budget). The in-memory ring serves the status API and dashboard without re-reading the file. Writes
and reads may come from different threads (controller vs HTTP server), hence the lock.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from autoballoon.errors import InvalidValueError
from autoballoon.model import Action

JournalEntry = Mapping[str, Any]


class Journal:
    """Append-only JSON-lines file (optional) and a bounded ring of the latest entries."""

    def __init__(self, path: str | Path | None = None, *, ring_size: int = 1000) -> None:
        self.path = Path(path) if path is not None else None
        self._ring: deque[JournalEntry] = deque(maxlen=ring_size)
        self._lock = threading.Lock()
        self._seq = 0
        self._file: TextIO | None = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8", buffering=1)
            except OSError as e:
                raise InvalidValueError(
                    "journal file", str(self.path), f"a writable path ({e.strerror})"
                ) from None

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` with a ``seq`` one above the previous entry's: a number that never changes,
        so that a reader of the ring (``/api/v1/events`` paging) can say where it stopped."""
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, **entry}
            line = json.dumps(record, separators=(",", ":"), sort_keys=False, default=str)
            self._ring.append(record)
            if self._file is not None:
                self._file.write(line + "\n")

    def action(
        self,
        time: float,
        action: Action,
        *,
        host_available: int | None,
        applied: bool,
        error: str | None = None,
    ) -> None:
        """One balloon change, with the numbers behind it; ``applied`` is False in a dry run or on error."""
        entry: dict[str, Any] = {
            "time": round(time, 3),
            "kind": "action",
            "vm": action.vm,
            "direction": action.direction,
            "old_target": action.old_target,
            "new_target": action.new_target,
            "reason": action.reason,
            "demand": action.demand,
            "available": action.available,
            "host_available": host_available,
            "budget": action.budget,
            "applied": applied,
        }
        if error is not None:
            entry["error"] = error
        self.write(entry)

    def event(self, time: float, kind: str, message: str, *, vm: str | None = None, **extra: Any) -> None:
        """Anything else worth telling the operator: warnings, stuck guests, reconnects, start and stop."""
        entry: dict[str, Any] = {"time": round(time, 3), "kind": kind, "message": message}
        if vm is not None:
            entry["vm"] = vm
        entry.update(extra)
        self.write(entry)

    def recent(self, n: int | None = None) -> tuple[JournalEntry, ...]:
        """The latest ``n`` entries (all kept ones when ``n`` is None), oldest first."""
        with self._lock:
            items = tuple(self._ring)
        return items if n is None else items[-n:] if n > 0 else ()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of a journal file (tests and post-mortems)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
