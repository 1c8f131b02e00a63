"""What the calibration probes measured (``calibrate.py`` measures), and how the report shows it.

Kept apart from the probes so that a report can be re-made from recordings without libvirt.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autoballoon.units import MiB


@dataclass(frozen=True, slots=True)
class OomTrial:
    level: int  # the MemAvailable the guest was shrunk towards (bytes)
    available: int  # the guest's MemAvailable when the growth started (bytes)
    kind: str  # "ramp" or "alloc"
    size: int
    rate: int  # bytes/s; 0 for at once
    killed: bool
    reacted_s: float | None  # when the ideal 2 s daemon gave the memory back, from the start
    kill_s: float | None  # when the kill was first seen
    min_available: int  # the lowest MemAvailable the guest reported before the kill (or in the trial)
    guest_available_before_kill: int | None
    libvirt_available_before_kill: int | None
    libvirt_age_before_kill_s: float | None  # how old libvirt's figure was then
    samples: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Calibration:
    stats_latency_s: tuple[float, ...]
    inflate_bytes_s: tuple[float, ...]
    deflate_bytes_s: tuple[float, ...]
    inflate_swapping_bytes_s: tuple[float, ...]
    oom_trials: tuple[OomTrial, ...]
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def calibration_from_json(data: dict[str, Any]) -> Calibration:
    """A :class:`Calibration` back from :meth:`Calibration.to_json`."""
    trials = tuple(OomTrial(**t) for t in data["oom_trials"])
    lists = {k: tuple(v) for k, v in data.items() if k not in ("oom_trials", "wall_s")}
    return Calibration(**lists, oom_trials=trials, wall_s=data["wall_s"])


def _spread(values: Sequence[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    if not values:
        return "not measured"
    v = [x / scale for x in values]
    return f"median {statistics.median(v):{fmt}}, min {min(v):{fmt}}, max {max(v):{fmt}} ({len(v)} times)"


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MiB:.0f}"


def edge_summary(trials: Sequence[OomTrial]) -> list[str]:
    """Per level: which ramp rates and at-once sizes no trial died of, and which killed in some trial."""
    out = []
    for level in sorted({t.level for t in trials}):
        mine = [t for t in trials if t.level == level]

        def safe(kind: str, key: Callable[[OomTrial], int], mine: list[OomTrial] = mine) -> str:
            values = sorted({key(t) for t in mine if t.kind == kind})
            ok = [v for v in values if not any(t.killed for t in mine if t.kind == kind and key(t) == v)]
            dead = [v for v in values if v not in ok]

            def listed(vs: list[int]) -> str:
                return ", ".join(f"{v / MiB:.0f}" for v in vs) or "none"

            return f"survived {listed(ok)}, killed {listed(dead)}"

        out.append(
            f"N = {level / MiB:.0f} MiB: ramps (MiB/s) {safe('ramp', lambda t: t.rate)}; "
            f"at-once allocations (MiB) {safe('alloc', lambda t: t.size)}."
        )
    return out


def render_calibration(cal: Calibration) -> str:
    """The "Measured on real guests" section of the report."""
    lines = [
        "## Measured on real guests\n",
        "From `autoballoon --connect qemu:///system evaluate --real --calibrate` "
        f"({cal.wall_s:.0f} s; rules in `src/autoballoon/evaluate/real/calibrate.py`), on 512 MiB guests "
        "with stats every second:\n",
        f"- **Stats latency** (64 MiB allocated at once until libvirt's MemAvailable shows 48 MiB of it, "
        f"from the allocation's end): {_spread(cal.stats_latency_s)} s.",
        "- **Balloon inflate** (512 → 128 MiB, idle guest): "
        f"{_spread(cal.inflate_bytes_s, MiB, '.0f')} MiB/s.",
        f"- **Balloon deflate** (128 → 512 MiB): {_spread(cal.deflate_bytes_s, MiB, '.0f')} MiB/s.",
        f"- **Inflate that must swap** (a 320 MiB workload, swap disk): "
        f"{_spread(cal.inflate_swapping_bytes_s, MiB, '.1f')} MiB/s.",
        "",
        "**The OOM edge.** A guest shrunk to about N MiB of MemAvailable starts growing; an ideal daemon "
        "ticking every 2 s gives it all its memory back at the first tick whose libvirt stats show the "
        "drop. MemAvailable is the guest's own; libvirt's is what a daemon saw, with its age.\n",
        "| N MiB | growth | killed | ideal daemon reacted s | kill seen s | min MemAvailable MiB "
        "| MemAvailable before kill: guest / libvirt MiB (age s) |",
        "|--:|---|---|--:|--:|--:|---|",
    ]
    for t in sorted(cal.oom_trials, key=lambda t: (t.level, t.kind, t.rate, t.size)):
        growth = (
            f"ramp {t.rate / MiB:.0f} MiB/s" if t.kind == "ramp" else f"alloc {t.size / MiB:.0f} MiB at once"
        )
        before = (
            f"{_mib(t.guest_available_before_kill)} / {_mib(t.libvirt_available_before_kill)} "
            f"({_f(t.libvirt_age_before_kill_s)})"
            if t.killed
            else "–"
        )
        lines.append(
            f"| {t.available / MiB:.0f} | {growth} | {'yes' if t.killed else 'no'} "
            f"| {_f(t.reacted_s)} | {_f(t.kill_s)} | {_mib(t.min_available)} | {before} |"
        )
    lines += ["", "In short, per N (a growth counts as survived only if every trial of it survived):", ""]
    lines += [f"- {line}" for line in edge_summary(cal.oom_trials)]
    return "\n".join(lines) + "\n"
