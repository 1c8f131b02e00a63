"""Host-side reclaim per reclaim mechanism, on real guests: the balloon alone, the balloon with free page
reporting, and virtio-mem, each under the daemon on ``qmp://``, against the same guests left alone.

Each mechanism gets two fresh plain-QEMU rig guests of 512 MiB (virtio-mem: 256 MiB of boot memory and
a 256 MiB device, plugged in full at boot, so that every run starts with 512 MiB per guest), the same
workload in each guest, and a daemon that must fit both into a budget of 800 MiB. What is measured:

- **host RSS**: the QEMU processes' resident memory, summed over the guests, sampled every second from
  /proc (what the host really holds for them); *reclaimed* is 2 x 512 MiB less its mean;
- **OOM kills** in the guests (their /proc/vmstat ``oom_kill``);
- **pressure**: seconds in which some guest task stalled on memory (the guests' PSI ``some`` total).

The daemon runs the policy as it is (``--policy`` picks another); the mechanism changes only the guests'
devices. Boots guests, so hold the rig lease:

    flock /run/lock/autoballoon-rig.lease .venv/bin/python bench/bench_mechanisms.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from autoballoon.hostinfo import process_rss
from autoballoon.rig.domains import GuestSpec
from autoballoon.rig.qemu import QemuGuest, QemuRig, QemuSpec, VirtioMemSpec, open_qemu_rig
from autoballoon.units import MiB

GUEST = 512 * MiB
GUESTS = 2
BUDGET = 800 * MiB
DURATION_S = 85.0
SAMPLE_S = 1.0
INTERVAL_S = 1.0
FLOOR = "128MiB"
US_PER_S = 1e6
#: (second, action, MiB, MiB/s): the same in every run. Guest 0 takes 200 MiB at once, gives it back,
#: then grows by 150 MiB at 15 MiB/s; guest 1 takes 100 MiB for a while.
WORKLOADS: tuple[tuple[tuple[float, str, int, int], ...], ...] = (
    ((0, "grow", 200, 0), (25, "shrink", 0, 0), (40, "grow", 150, 15), (65, "shrink", 0, 0)),
    ((10, "grow", 100, 0), (50, "shrink", 0, 0)),
)


def spec(mechanism: str, directory: Path) -> QemuSpec:
    if mechanism == "virtio-mem":
        half = GUEST // 2
        return QemuSpec(
            guest=GuestSpec(memory_bytes=half),
            virtio_mem=VirtioMemSpec(region_bytes=half, requested_bytes=half),
            directory=directory,
        )
    return QemuSpec(guest=GuestSpec(free_page_reporting=mechanism == "report"), directory=directory)


@dataclass(frozen=True)
class Result:
    mechanism: str
    mean_rss_mib: float
    final_rss_mib: float
    reclaimed_mib: float
    oom_kills: int
    pressure_s: float | None  # None: the guest kernel has PSI off
    actions: int


def play(guest: QemuGuest, workload: tuple[tuple[float, str, int, int], ...], t0: float) -> None:
    for at, action, mib, rate in workload:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        if action == "grow":
            guest.control.grow(mib * MiB, rate * MiB)
        else:
            guest.control.shrink(None)


def run(rig: QemuRig, mechanism: str, policy: str | None, log: Callable[[str], None]) -> Result:
    with tempfile.TemporaryDirectory(prefix="/tmp/abm-") as tmp:
        directory = Path(tmp)
        guests = rig.boot([spec(mechanism, directory) for _ in range(GUESTS)])
        try:
            return measure(mechanism, guests, directory, policy, log)
        finally:
            for g in guests:
                rig.stop(g)


def measure(
    mechanism: str, guests: list[QemuGuest], directory: Path, policy: str | None, log: Callable[[str], None]
) -> Result:
    journal = directory / "journal.jsonl"
    config = directory / "autoballoon.toml"
    config.write_text(
        f'interval = {INTERVAL_S}\njournal = "{journal}"\n[host]\nbudget = "{BUDGET // MiB}MiB"\n'
        f'[defaults]\nmin = "{FLOOR}"\n[health]\nhost_load_factor = 1000\n'
    )
    daemon: subprocess.Popen[bytes] | None = None
    if mechanism != "none":
        argv = [sys.executable, "-m", "autoballoon", "--connect", f"qmp://{directory}/?glob=*.qmp", "run"]
        argv += ["--config", str(config), "--no-http", *(["--policy", policy] if policy else [])]
        daemon = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=(directory / "daemon.log").open("wb")
        )
    first = [g.control.sample() for g in guests]
    t0 = time.monotonic()
    players = [
        threading.Thread(target=play, args=(g, w, t0), daemon=True)
        for g, w in zip(guests, WORKLOADS, strict=True)
    ]
    for p in players:
        p.start()
    rss: list[int] = []
    while time.monotonic() - t0 < DURATION_S:
        rss.append(sum(process_rss(g.pid) or 0 for g in guests))
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t0) % SAMPLE_S))
    last = [g.control.sample() for g in guests]
    if daemon is not None:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    entries = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    moves = [e for e in entries if e.get("kind") == "action" and e.get("applied")]
    lowest = {
        g.name: min((e["new_target"] for e in moves if e["vm"] == g.name), default=None) for g in guests
    }
    shown = [None if v is None else v // MiB for v in lowest.values()]
    log(f"{mechanism}: {len(moves)} actions applied, lowest targets (MiB) {shown}")
    psi = all(a.psi_some_us >= 0 for a in first)
    mean = statistics.fmean(rss) / MiB
    result = Result(
        mechanism=mechanism,
        mean_rss_mib=round(mean, 1),
        final_rss_mib=round(rss[-1] / MiB, 1),
        reclaimed_mib=round(GUESTS * GUEST / MiB - mean, 1),
        oom_kills=sum(b.oom_kill - a.oom_kill for a, b in zip(first, last, strict=True)),
        pressure_s=(
            round(sum(b.psi_some_us - a.psi_some_us for a, b in zip(first, last, strict=True)) / US_PER_S, 2)
            if psi
            else None
        ),
        actions=len(moves),
    )
    log(f"{mechanism}: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mechanisms", default="none,balloon,report,virtio-mem")
    parser.add_argument("--policy", default=None, help="the daemon's --policy (default: its own)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rig = open_qemu_rig()
    results: list[Result] = []
    try:
        for mechanism in args.mechanisms.split(","):
            results.append(run(rig, mechanism, args.policy, lambda m: print(m, file=sys.stderr, flush=True)))
    finally:
        rig.close()
    print("| mechanism | mean QEMU RSS MiB | reclaimed at the host MiB | final RSS MiB | OOM kills |", end="")
    print(" pressure s |")
    print("|---|--:|--:|--:|--:|--:|")
    for r in results:
        print(
            f"| {r.mechanism} | {r.mean_rss_mib:.0f} | {r.reclaimed_mib:.0f} | {r.final_rss_mib:.0f} | "
            f"{r.oom_kills} | {'n/a' if r.pressure_s is None else f'{r.pressure_s:.1f}'} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
