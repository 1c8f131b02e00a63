"""The raw recording of one production run: every guest's samples, its application's results, the daemon's
actions. One gzip'd JSON document per (scenario, policy, repetition), like the real-guest traces: raw
figures only (bytes, cumulative counters, seconds since the daemon's start), ``null`` where a figure was
not available, so that the report's rules can change without running anything again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.real.trace import JournalAction, build, read_json, write_json

FORMAT = "autoballoon-production-trace/1"

#: Per-sample columns, in the order they are recorded (``target`` comes from the daemon's journal).
SAMPLE_FIELDS = (
    "t",
    "target",
    "actual",  # balloon actual, from libvirt
    "qemu_rss",  # VmRSS of the guest's QEMU process: what the host really gives the guest
    "guest_mem_total",
    "guest_mem_available",
    "guest_cached",
    "oom_kill",  # the guest's /proc/vmstat, cumulative
    "pswpin",
    "pgmajfault",
    "refault_anon",
    "refault_file",
    "pgsteal",
    "pgscan",
    "psi_some_us",  # the guest's /proc/pressure/memory, cumulative stall time
    "psi_full_us",
    "libvirt_last_update",
)


@dataclass(frozen=True, slots=True)
class AppRun:
    """One run of a guest's application (a measurement window, or one batch job), as its driver said."""

    started_s: float
    finished_s: float
    wall_s: float
    rate: float | None = None  # operations per second (db, web)
    p99_ms: float | None = None
    #: Why the run gave no result (the driver failed: an application killed, a timeout), else None.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProdGuestTrace:
    name: str
    domain: str
    memory: int
    app: str
    free_page_reporting: bool
    apps: tuple[AppRun, ...]
    samples: Mapping[str, Sequence[float | int | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProdTrace:
    scenario: str
    source: str
    policy: str
    repetition: int
    budget: int
    duration_s: float
    window_s: float
    started_wall: float
    daemon_command: str
    accel: str  # kvm or tcg: what the guests ran on
    aging_s: float  # how long the guests took to be aged before the daemon started
    guests: tuple[ProdGuestTrace, ...]
    actions: tuple[JournalAction, ...] = ()
    host_load: tuple[float, float] | None = None
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prod_trace_from_json(data: Mapping[str, Any]) -> ProdTrace:
    if data.get("format") != FORMAT:
        raise InvalidValueError("production trace format", data.get("format"), FORMAT)
    guests = tuple(
        build(ProdGuestTrace, {**g, "apps": tuple(build(AppRun, a) for a in g["apps"])})
        for g in data["guests"]
    )
    actions = tuple(build(JournalAction, a) for a in data.get("actions", ()))
    load = data.get("host_load")
    fixed = {"guests": guests, "actions": actions, "host_load": tuple(load) if load else None}
    return build(ProdTrace, {**data, **fixed})


def trace_filename(trace: ProdTrace) -> str:
    return f"{trace.scenario}--{trace.policy}--{trace.repetition}.json.gz"


def write_prod_trace(trace: ProdTrace, directory: Path) -> Path:
    return write_json(trace.to_json(), directory / trace_filename(trace))


def read_prod_traces(directory: Path) -> list[ProdTrace]:
    """Every production trace of a recordings directory, in file-name order."""
    paths = sorted(directory.glob("*--*--*.json.gz"))
    if not paths:
        raise InvalidValueError(
            "--from-record", str(directory), "a directory of recorded production runs (*--*--*.json.gz)"
        )
    return [prod_trace_from_json(read_json(p, "production trace")) for p in paths]
