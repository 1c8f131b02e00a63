"""The raw recording of one real run: what every guest saw, what libvirt reported, what the daemon did.

One JSON document per (scenario, policy), gzip'd when the name ends in ``.gz``. It is the benchmark's
evidence and the simulator's calibration data, so it keeps the raw figures, not derived ones: per guest and
per sample the time, the daemon's target, the balloon's actual size, the guest's own MemTotal /
MemAvailable / MemFree and swap, what libvirt's balloon stats said (and their ``last_update``), the guest's
cumulative OOM kills, PSI stall time, swap-in and major faults, the QEMU process's RSS, and the workload
commands with when they started and finished. Sizes are bytes, times seconds since the run's start
(``started_wall`` is that start as Unix time). A figure that was not available is ``null``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from autoballoon.errors import InvalidValueError
from autoballoon.journal import read_journal
from autoballoon.units import MiB

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FORMAT = "autoballoon-real-trace/1"

Outcome = Literal["done", "killed", "unfinished"]

#: Per-sample columns, in the order they are recorded. ``target`` is the daemon's, from its journal.
SAMPLE_FIELDS = (
    "t",  # seconds since the run's start (the daemon's start)
    "target",
    "actual",  # balloon actual, from libvirt
    "guest_mem_total",  # the guest's /proc/meminfo
    "guest_mem_available",
    "guest_mem_free",
    "guest_anon",  # AnonPages
    "guest_cached",  # Cached
    "guest_shmem",  # Shmem
    "guest_swap_total",
    "guest_swap_free",
    "oom_kill",  # the guest's /proc/vmstat, cumulative since boot
    "pswpin",
    "pswpout",
    "pgmajfault",
    "psi_some_us",  # the guest's /proc/pressure/memory, cumulative stall time
    "psi_full_us",
    "held",  # what the workload holds
    "libvirt_total",  # libvirt's balloon stats: 'available' (the guest's MemTotal)
    "libvirt_available",  # 'usable' (MemAvailable)
    "libvirt_free",  # 'unused' (MemFree)
    "libvirt_last_update",  # Unix time of the guest's last report
    "qemu_rss",  # VmRSS of the QEMU process, from /proc
)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    at_s: float
    text: str
    started_s: float | None = None
    finished_s: float | None = None
    outcome: Outcome = "unfinished"


@dataclass(frozen=True, slots=True)
class JournalAction:
    """One applied balloon change from the daemon's journal."""

    t: float
    vm: str  # the libvirt domain name
    old_target: int
    new_target: int
    reason: str


@dataclass(frozen=True, slots=True)
class GuestTrace:
    name: str  # the scenario's name for the guest
    domain: str  # its libvirt domain in this run
    memory: int
    autodeflate: bool
    swap: int
    stats_period_s: int
    commands: tuple[CommandRecord, ...]
    #: Column -> one value per sample (see SAMPLE_FIELDS).
    samples: Mapping[str, Sequence[float | int | None]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.samples.get("t", ()))


@dataclass(frozen=True, slots=True)
class RunTrace:
    scenario: str
    source: str
    policy: str
    budget: int
    duration_s: float
    started_wall: float
    daemon_command: str
    guests: tuple[GuestTrace, ...]
    actions: tuple[JournalAction, ...] = ()
    #: The host's 1-minute load average at the start and the end: the runs share two CPUs with the rest
    #: of the host, and a busy host slows guests, daemon and sampling alike.
    host_load: tuple[float, float] | None = None
    #: kvm or tcg: what the guests ran on (None in traces from before the rig could choose: TCG).
    accel: str | None = None
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


D = TypeVar("D", bound="DataclassInstance")


def build(cls: type[D], data: Mapping[str, Any]) -> D:
    """A dataclass from a JSON object, ignoring keys it does not know (a newer trace's extra columns)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def trace_from_json(data: Mapping[str, Any]) -> RunTrace:
    """A :class:`RunTrace` back from :meth:`RunTrace.to_json`; refuses another format."""
    if data.get("format") != FORMAT:
        raise InvalidValueError("real-run trace format", data.get("format"), FORMAT)
    guests = tuple(
        build(GuestTrace, {**g, "commands": tuple(build(CommandRecord, c) for c in g["commands"])})
        for g in data["guests"]
    )
    actions = tuple(build(JournalAction, a) for a in data.get("actions", ()))
    load = data.get("host_load")
    fixed = {"guests": guests, "actions": actions, "host_load": tuple(load) if load else None}
    return build(RunTrace, {**data, **fixed})


def write_trace(trace: RunTrace, path: Path) -> Path:
    """Write compact JSON (gzip'd for a ``.gz`` name); returns the path."""
    return write_json(trace.to_json(), path)


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    """Compact JSON, gzip'd for a ``.gz`` name; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, separators=(",", ":"))
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_trace(path: Path) -> RunTrace:
    return trace_from_json(read_json(path, "real-run trace"))


def read_json(path: Path, what: str) -> Any:
    """The JSON document of ``path`` (gunzipped for a ``.gz`` name); a clear error if it is not one."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InvalidValueError(what, str(path), f"a readable trace file ({exc})") from None


def trace_filename(scenario: str, policy: str) -> str:
    return f"{scenario}--{policy}.json.gz"


def targets_at(
    times: Sequence[float], actions: Sequence[JournalAction], domain: str, start: int
) -> list[int]:
    """The daemon's target for ``domain`` at each time: its last applied action's, else ``start``."""
    mine = sorted((a for a in actions if a.vm == domain), key=lambda a: a.t)
    out: list[int] = []
    current, i = start, 0
    for t in times:
        while i < len(mine) and mine[i].t <= t:
            current = mine[i].new_target
            i += 1
        out.append(current)
    return out


def journal_actions(path: Path, started_wall: float) -> tuple[JournalAction, ...]:
    """The applied balloon changes of a journal, timed from the run's start."""
    if not path.exists():
        return ()
    return tuple(
        JournalAction(
            t=round(e["time"] - started_wall, 3),
            vm=e["vm"],
            old_target=e["old_target"],
            new_target=e["new_target"],
            reason=e["reason"],
        )
        for e in read_journal(path)
        if e.get("kind") == "action" and e.get("applied")
    )


#: The simulator's replay format (``autoballoon.sim.replay``): one file per run, per-sample dicts.
RECORDING_FORMAT = "autoballoon-recording/1"


def to_recording(trace: RunTrace, description: str = "") -> dict[str, Any]:
    """The run in the simulator's replay format: the same guests, workload, targets and outcomes, so that
    a replay can run each real workload with its recorded target trajectory. Needs the AnonPages, Cached
    and Shmem columns (traces from before they were recorded cannot be converted)."""
    guests = []
    for g in trace.guests:
        s = g.samples
        if not s.get("guest_anon"):
            raise InvalidValueError(f"trace {trace.scenario}/{trace.policy}", g.name, "AnonPages samples")
        rows = [
            {
                "t": s["t"][i],
                "target_bytes": s["target"][i],
                "actual_bytes": s["actual"][i],
                "meminfo": {
                    "MemTotal": s["guest_mem_total"][i],
                    "MemAvailable": s["guest_mem_available"][i],
                    "MemFree": s["guest_mem_free"][i],
                    "AnonPages": s["guest_anon"][i],
                    "Cached": s["guest_cached"][i],
                    "Shmem": s["guest_shmem"][i],
                },
                "oom_kills": s["oom_kill"][i],
                "held_mib": (s["held"][i] or 0) // MiB,
            }
            for i in range(len(s["t"]))
            if s["guest_mem_available"][i] is not None and s["actual"][i] is not None
        ]
        guests.append(
            {
                "name": g.name,
                "max_bytes": g.memory,
                "autodeflate": g.autodeflate,
                "swap_bytes": g.swap,
                "stats_period_s": g.stats_period_s,
                "workload": [[c.at_s, c.text] for c in g.commands],
                "samples": rows,
            }
        )
    name = f"{trace.scenario}--{trace.policy}"
    return {"format": RECORDING_FORMAT, "name": name, "description": description, "guests": guests}
