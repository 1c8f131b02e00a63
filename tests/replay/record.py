"""Record real guests for the simulator's replay test: ``python -m tests.replay.record OUT.json [PLAN]``.

Boots one rig guest per plan step below (``autoballoon.rig``: 512 MiB, TCG, balloon stats every second, no
swap), drives each one with a fixed **target trajectory** and a **workload** (no policy), and samples
every half second what the host set, what the balloon reached, the guest's ``/proc/meminfo`` and its
OOM-kill count. The file is the format :mod:`autoballoon.sim.replay` reads, so the simulator can be run
through the very same targets and workload and its predictions compared (``tests/test_replay.py``).

Boots real guests: run it under the rig's lease, ``flock /run/lock/autoballoon-rig.lease python -m
tests.replay.record tests/replay/squeeze.json``. It removes its guests even when it fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoballoon.rig import daemons
from autoballoon.rig.domains import Guest, GuestSpec, boot, destroy, open_connection, quiet_libvirt
from autoballoon.rig.errors import RigError
from autoballoon.rig.image import build_image
from autoballoon.units import MiB, parse_size

SAMPLE_S = 0.5
KIB = 1024
#: /proc/meminfo fields kept in a recording (the replay needs MemAvailable and AnonPages; the rest
#: explains the gap between MemAvailable and what reclaim can free).
MEMINFO_KEYS = (
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Cached",
    "Shmem",
    "AnonPages",
    "SReclaimable",
    "SUnreclaim",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """One guest's run: balloon targets and workload commands at seconds from the start."""

    name: str
    targets: tuple[tuple[float, str], ...]
    workload: tuple[tuple[float, str], ...]
    autodeflate: bool = False


#: Each plan is the situation a policy can get a real guest into; the outcome is whatever the guest does.
PLANS: dict[str, tuple[tuple[Plan, ...], float, str]] = {
    "squeeze": (
        (
            # Shrunk to a small cushion, then a sudden allocation: without autodeflate the OOM killer.
            Plan("alloc-at-once", ((5.0, "200M"), (60.0, "512M")), ((20.0, "alloc 100M"), (50.0, "free"))),
            # The same with autodeflate: the driver gives pages back instead.
            Plan(
                "alloc-at-once-autodeflate",
                ((5.0, "200M"), (60.0, "512M")),
                ((20.0, "alloc 100M"), (50.0, "free")),
                autodeflate=True,
            ),
            # A ramp the host answers a few seconds late: grows in time or not.
            Plan(
                "ramp-late-growth",
                ((5.0, "200M"), (24.0, "450M")),
                ((20.0, "ramp 150M 20M/s"), (50.0, "free")),
            ),
            # Inflating against memory in use (the balloon cannot take it), then deflating for an allocation.
            Plan(
                "inflate-into-use",
                ((15.0, "220M"), (35.0, "512M")),
                ((5.0, "alloc 150M"), (40.0, "alloc 150M"), (60.0, "free")),
            ),
        ),
        75.0,
        "512 MiB rig guests without swap: sudden and ramped allocations under a tight target, with and "
        "without autodeflate, and a balloon inflating against memory in use.",
    ),
    "threshold": (
        (
            # Allocations that leave MemAvailable at about 11, 3 and -5 MiB under a 200 MiB target:
            # where exactly does the OOM killer fire?
            Plan("alloc-to-11M", ((5.0, "200M"), (60.0, "512M")), ((15.0, "alloc 120M"), (50.0, "free"))),
            Plan("alloc-to-3M", ((5.0, "200M"), (60.0, "512M")), ((15.0, "alloc 128M"), (50.0, "free"))),
            Plan("alloc-beyond", ((5.0, "200M"), (60.0, "512M")), ((15.0, "alloc 136M"), (50.0, "free"))),
            # The same beyond-the-limit allocation with autodeflate: the balloon gives pages back instead.
            Plan(
                "alloc-beyond-autodeflate",
                ((5.0, "200M"), (60.0, "512M")),
                ((15.0, "alloc 136M"), (50.0, "free")),
                autodeflate=True,
            ),
        ),
        70.0,
        "512 MiB rig guests without swap under a 200 MiB target: allocations that leave MemAvailable at "
        "about 11, 3 and -5 MiB, the last also with autodeflate.",
    ),
}


def _sample(conn: Any, guest: Guest, target: int, t: float) -> dict[str, Any]:
    dom = conn.lookupByName(guest.name)
    stats = dom.memoryStats()
    meminfo = guest.control.meminfo()
    return {
        "t": round(t, 3),
        "target_bytes": target,
        "actual_bytes": int(stats.get("actual", 0)) * KIB,
        "libvirt": {k: int(v) for k, v in stats.items()},
        "meminfo": {k: meminfo[k] for k in MEMINFO_KEYS if k in meminfo},
        "oom_kills": guest.control.oomkills(),
        "held_mib": guest.control.held().get("held", 0),
    }


def _run_workload(guest: Guest, plan: Plan, start: float, stop: threading.Event) -> None:
    for at, command in plan.workload:
        while time.monotonic() - start < at:
            if stop.wait(0.05):
                return
        words = command.split()
        with contextlib.suppress(RigError):
            if words[0] in ("alloc", "ramp"):
                mib = parse_size(words[1], default_unit=MiB) // MiB
                rate = (
                    parse_size(words[2].removesuffix("/s"), default_unit=MiB) // MiB if len(words) > 2 else 0
                )
                guest.control.alloc(mib, rate or 100_000)  # "at once": a rate the guest cannot reach
            elif words[0] == "free":
                guest.control.free_all()


def record(plans: tuple[Plan, ...], duration: float) -> list[dict[str, Any]]:
    quiet_libvirt()
    daemons.ensure_daemons()
    image = build_image()
    conn = open_connection()
    specs = [GuestSpec(autodeflate=p.autodeflate) for p in plans]
    guests = boot(conn, image, specs)
    stop = threading.Event()
    out: list[dict[str, Any]] = []
    try:
        for g in guests:
            g.control.free_all()
        records: list[list[dict[str, Any]]] = [[] for _ in guests]
        targets = [GUEST_BYTES for _ in guests]
        start = time.monotonic()
        workers = [
            threading.Thread(target=_run_workload, args=(g, p, start, stop), daemon=True)
            for g, p in zip(guests, plans, strict=True)
        ]
        for w in workers:
            w.start()
        next_sample = 0.0
        while (now := time.monotonic() - start) < duration:
            for i, (g, p) in enumerate(zip(guests, plans, strict=True)):
                due = [size for at, size in p.targets if at <= now]
                want = parse_size(due[-1], default_unit=MiB) if due else GUEST_BYTES
                if want != targets[i]:
                    conn.lookupByName(g.name).setMemoryFlags(want // KIB, 1)  # VIR_DOMAIN_AFFECT_LIVE
                    targets[i] = want
                records[i].append(_sample(conn, g, targets[i], time.monotonic() - start))
            next_sample += SAMPLE_S
            time.sleep(max(0.0, next_sample - (time.monotonic() - start)))
        for g, p, samples in zip(guests, plans, records, strict=True):
            out.append(
                {
                    "name": p.name,
                    "max_bytes": g.spec.memory_mib * MiB,
                    "autodeflate": p.autodeflate,
                    "swap_bytes": 0,
                    "stats_period_s": g.spec.stats_period,
                    "workload": [list(w) for w in p.workload],
                    "targets": [list(w) for w in p.targets],
                    "samples": samples,
                }
            )
    finally:
        stop.set()
        for g in guests:
            g.control.close()
            with contextlib.suppress(Exception):
                destroy(conn, g.name)
        conn.close()
    return out


GUEST_BYTES = 512 * MiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("plan", nargs="?", default="squeeze", choices=sorted(PLANS))
    args = parser.parse_args(argv)
    plans, duration, description = PLANS[args.plan]
    guests = record(plans, duration)
    doc = {
        "format": "autoballoon-recording/1",
        "name": args.plan,
        "description": description,
        "guests": guests,
    }
    args.out.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    kills = {g["name"]: g["samples"][-1]["oom_kills"] - g["samples"][0]["oom_kills"] for g in guests}
    print(f"wrote {args.out}: {len(guests)} guests, OOM kills {kills}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
