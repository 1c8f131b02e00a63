"""The daemon's journal: one JSON object per line for every action and event, plus a ring in memory.

An operator must be able to answer "why did my VM lose 300 MiB at 03:12?" from the file alone, so every
action line carries the numbers the decision was based on (demand, the guest's MemAvailable, the host
budget). The in-memory ring serves the status API and dashboard without re-reading the file. Writes
and reads may come from different threads (controller vs HTTP server), hence the lock.

A journal that cannot be written is not a reason to stop ballooning: a full disk (or ``--journal
/dev/full``) killed the daemon, and under systemd's ``Restart=on-failure`` it then failed again at every
start. A failed write is logged once per run of failures, counted in :attr:`Journal.write_errors` (the
``autoballoon_journal_errors_total`` metric), the entry stays in the ring, and the first line written
after the failures says how many were lost. Each line goes out in one ``write`` on an ``O_APPEND``
descriptor, so a line is never interleaved with another; a line the disk cut short is cut off again
(truncated) where that is possible, so the file holds whole lines only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoballoon.errors import InvalidValueError
from autoballoon.model import Action
from autoballoon.reasons import action_text
from autoballoon.text import printable

JournalEntry = Mapping[str, Any]

log = logging.getLogger(__name__)

#: Journal kinds the daemon's log gives at WARNING (the rest at INFO): what an operator must act on.
WARNING_KINDS = frozenset(
    {"warning", "quarantine", "pause", "error", "backend-error", "journal-error", "vm-gone", "remedy"}
)
#: Statuses whose arrival is a warning in the log.
WARNING_STATUSES = frozenset({"stuck", "no-stats", "quarantined"})


def log_level(entry: Mapping[str, Any]) -> int:
    """The level a journal entry is logged at: a failed action, an event to act on, or a status that
    means trouble at WARNING; every other action, status change and event at INFO."""
    kind = entry.get("kind")
    if kind == "action":
        failed = entry.get("applied") is False and entry.get("error") is not None
        return logging.WARNING if failed else logging.INFO
    warn = (
        kind in WARNING_KINDS
        or (kind == "status" and entry.get("status") in WARNING_STATUSES)
        or (kind == "host-reserve-spent" and entry.get("spending") is True)
    )
    return logging.WARNING if warn else logging.INFO


def log_text(entry: Mapping[str, Any]) -> str:
    """A journal entry as a line of the daemon's log (stderr, hence journald): an action with its
    figures, anything else by its message; VM names escaped."""
    if entry.get("kind") == "action":
        return printable(action_text(entry))
    return printable(str(entry.get("message", entry.get("kind"))))


#: Permissions of a journal file the daemon creates: it names VMs and their memory, so not world-readable.
FILE_MODE = 0o640


class Journal:
    """Append-only JSON-lines file (optional) and a bounded ring of the latest entries."""

    def __init__(self, path: str | Path | None = None, *, ring_size: int = 1000) -> None:
        self.path = Path(path) if path is not None else None
        self._ring: deque[JournalEntry] = deque(maxlen=ring_size)
        self._lock = threading.Lock()
        self._seq = 0
        self._fd: int | None = None
        #: Entries that could not be written to the file (they are still in the ring), since start.
        self.write_errors = 0
        self._failing = 0  # entries lost in the current run of failures
        self._torn = False  # the file may end in part of a line
        if self.path is not None:
            self._fd = self._open(self.path)

    @staticmethod
    def _open(path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except (OSError, ValueError) as e:  # ValueError: a NUL in the path
            reason = e.strerror if isinstance(e, OSError) else str(e)
            raise InvalidValueError("journal file", str(path), f"a writable path ({reason})") from None

    def reopen(self) -> bool:
        """Open the journal's path again (SIGHUP, after logrotate moved the file away): new lines go to
        a new file of that name. If it cannot be opened the old descriptor is kept, and lines go on to
        the moved file rather than nowhere. True if the file was reopened (or there is none)."""
        if self.path is None:
            return True
        try:
            fd = self._open(self.path)
        except InvalidValueError as e:
            log.error("journal not reopened: %s; writing on to the file it had open", e)
            return False
        with self._lock:
            old, self._fd = self._fd, fd
            self._torn = False
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        return True

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` with a ``seq`` one above the previous entry's: a number that never changes,
        so that a reader of the ring (``/api/v1/events`` paging) can say where it stopped. It goes to the
        ring, and to the file if there is one; a failed write is counted, never raised."""
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, **entry}
            line = json.dumps(record, separators=(",", ":"), sort_keys=False, default=str)
            self._ring.append(record)
            if self._fd is not None:
                self._append(line)
        level = log_level(record)
        if log.isEnabledFor(level):
            log.log(level, "%s", log_text(record))

    def _append(self, line: str) -> None:
        """Write one line (the lock is held). On failure: count, log the first of a run, carry on."""
        assert self._fd is not None
        lost = self._failing
        if lost:
            note = {
                "kind": "journal-error",
                "message": f"{lost} journal entries could not be written before this",
            }
            line = json.dumps(note, separators=(",", ":")) + "\n" + line
        data = (("\n" if self._torn else "") + line + "\n").encode("utf-8")
        try:
            self._write_all(data)
        except OSError as e:
            self.write_errors += 1
            self._failing += 1
            if not lost:
                log.error(
                    "journal %s cannot be written (%s); ballooning goes on, entries are kept in memory only",
                    self.path,
                    e.strerror or e,
                )
            return
        self._torn = False
        if lost:
            self._failing = 0
            log.warning("journal %s is writable again; %d entries were lost", self.path, lost)

    def _write_all(self, data: bytes) -> None:
        """Write all of ``data`` or none of it: a short write (the disk filled within it) is truncated off
        again, so that the next line does not continue a fragment; if that fails too, the next line
        starts on a new line."""
        assert self._fd is not None
        done = 0
        try:
            while done < len(data):
                n = os.write(self._fd, data[done:])
                if n <= 0:
                    raise OSError(28, "No space left on device")
                done += n
        except OSError:
            if done:
                try:
                    end = os.lseek(self._fd, 0, os.SEEK_END)
                    os.ftruncate(self._fd, end - done)
                except OSError:
                    self._torn = True
            raise

    def action(
        self,
        time: float,
        action: Action,
        *,
        host_available: int | None,
        applied: bool,
        error: str | None = None,
        figures: Mapping[str, Any] | None = None,
    ) -> None:
        """One balloon change, with the numbers behind it (``figures``: what the decision sized, see
        :func:`autoballoon.reasons.figures`); ``applied`` is False in a dry run or on error."""
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
        if figures is not None:
            entry.update({k: v for k, v in figures.items() if k not in entry or entry[k] is None})
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
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError as e:  # a write-back error surfacing at close: nothing left to do about it
                    log.warning("closing journal %s: %s", self.path, e)
                self._fd = None


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of a journal file (tests and post-mortems)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
