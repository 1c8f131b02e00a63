"""What the daemon must remember across restarts, in one small JSON file written atomically.

A restarted daemon that forgot its quarantines would balloon a guest straight back into the storm that
got it quarantined, and one that forgot a manual hold would fight the operator's ``setmem``. So the
controller saves what it remembers after each change, and reads it back at start.

Two promises:

- **A save is all or nothing.** The document goes to a temporary file in the same directory, is flushed
  to disk (``fsync``), then renamed over the old one, and the directory is flushed too (POSIX
  ``rename`` replaces atomically; see rename(2)). A daemon killed at any instant (``kill -9``, a power
  cut) leaves the old document or the new one, never a mix. A save that fails (full disk, read-only
  file system) is counted, and the daemon carries on with what it has in memory; the first failure of a
  run is logged, and the first save that works again says how many failed.
- **A load never crashes the daemon.** A missing file means a first start. A file that is not ours, is
  corrupt, was written by a newer version, or does not fit the caller's model is logged at warning
  level and ignored: starting with nothing remembered is safe (it is what a first start does).

The file is an envelope, ``{"format": "autoballoon-state", "version": 1, "saved_at": <unix time>,
"data": {...}}``; what ``data`` holds is the caller's (a pydantic model validates it on load).
Two daemons sharing one state path do not corrupt it (each rename is atomic), but the last one to save
wins; give each its own path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoballoon.units import MiB

log = logging.getLogger(__name__)

#: Where the daemon keeps its state unless the config's ``state`` key says otherwise (FHS: /var/lib is
#: for state that programs keep between runs).
DEFAULT_STATE_PATH = Path("/var/lib/autoballoon/state.json")
FORMAT = "autoballoon-state"
#: The layout of the envelope; a file from a newer version is ignored rather than misread.
VERSION = 1
#: A state file larger than this is not ours (ours holds a few records per VM): it is not read at all.
MAX_BYTES = 64 * MiB
#: Permissions: the file names VMs and what the daemon decided about them.
FILE_MODE = 0o600

M = TypeVar("M", bound=BaseModel)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["autoballoon-state"]
    version: int = Field(ge=1)
    saved_at: float
    data: dict[str, Any]


def _no_constants(name: str) -> float:
    """NaN and Infinity are not JSON (RFC 8259); a file holding them was not written by us."""
    raise ValueError(f"{name} is not a JSON number")


class StateStore:
    """One JSON document at ``path``: :meth:`save` replaces it atomically, :meth:`load` validates it
    (and sweeps away the temporary files of saves that were killed midway)."""

    def __init__(self, path: str | Path = DEFAULT_STATE_PATH) -> None:
        self.path = Path(path)
        #: Saves that failed since start; for a metric. Only the first of a run of failures is logged.
        self.write_errors = 0
        self._failing = 0  # saves failed in the current run of failures

    # -- reading ---------------------------------------------------------------------------------------

    @overload
    def load(self, model: None = None) -> dict[str, Any] | None: ...

    @overload
    def load(self, model: type[M]) -> M | None: ...

    def load(self, model: type[M] | None = None) -> M | dict[str, Any] | None:
        """The document last saved (its ``data``, validated by ``model`` if given), or None when there is
        none, or when it cannot be used; the reason is logged at warning level. Never raises."""
        try:
            return self._load(model)
        except _Unusable as e:
            log.warning("ignoring state file %s: %s; starting with nothing remembered", self.path, e)
            return None

    def _load(self, model: type[M] | None) -> M | dict[str, Any] | None:
        self._sweep()
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _Unusable(f"cannot read it ({e.strerror or e})") from None
        if len(raw) > MAX_BYTES:
            raise _Unusable(f"larger than {MAX_BYTES // MiB} MiB, so not an autoballoon state file")
        try:
            document = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _Unusable(f"not JSON ({type(e).__name__}: {str(e)[:100]})") from None
        ours = isinstance(document, dict) and document.get("format") == FORMAT
        if ours and isinstance(document.get("version"), int) and document["version"] > VERSION:
            raise _Unusable(f"written by a newer autoballoon (version {document['version']} > {VERSION})")
        try:
            envelope = _Envelope.model_validate(document)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            raise _Unusable(f"not an autoballoon state file ({where}: {first['msg']})") from None
        if model is None:
            return envelope.data
        try:
            return model.model_validate(envelope.data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "data"
            raise _Unusable(f"its data does not fit ({where}: {first['msg']})") from None
        except RecursionError:
            raise _Unusable("its data nests too deeply") from None

    def _sweep(self) -> None:
        """Remove temporary files of saves that were killed before their rename (they are never read)."""
        try:
            leftovers = list(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        except OSError:
            return
        for tmp in leftovers:
            try:
                tmp.unlink()
            except OSError as e:
                log.debug("cannot remove %s: %s", tmp, e)

    # -- writing ---------------------------------------------------------------------------------------

    def save(self, data: Mapping[str, Any] | BaseModel, *, now: float | None = None) -> bool:
        """Replace the document with ``data`` atomically; True when it is on disk. A failure is logged
        and counted, never raised: the daemon's state stays in memory and the next save tries again."""
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else dict(data)
        envelope = {
            "format": FORMAT,
            "version": VERSION,
            "saved_at": time.time() if now is None else now,
            "data": payload,
        }
        try:
            text = json.dumps(envelope, allow_nan=False, separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as e:  # a caller's bug, but still not a reason to stop the daemon
            return self._failed(f"the state is not JSON ({e})")
        try:
            self._replace(text.encode("utf-8"))
        except OSError as e:
            return self._failed(e.strerror or str(e))
        if self._failing:
            log.warning("state saved to %s again; %d saves had failed before", self.path, self._failing)
            self._failing = 0
        return True

    def _failed(self, reason: str) -> bool:
        """Count a failed save; log only the first of a run, as the journal does: the controller tries
        again every tick, and a read-only disk would otherwise put an error line in the log each time."""
        self.write_errors += 1
        self._failing += 1
        if self._failing == 1:
            log.error(
                "cannot save state to %s (%s); it is kept in memory and saved again later",
                self.path,
                reason,
            )
        else:
            log.debug("cannot save state to %s (%s), again", self.path, reason)
        return False

    def _replace(self, data: bytes) -> None:
        """temp file + fsync + rename + fsync of the directory; the temp file never outlives a failure."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename itself is on disk
        finally:
            os.close(dir_fd)


class _Unusable(Exception):
    """Why a state file cannot be used (logged, then ignored)."""
