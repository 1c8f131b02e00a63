"""Policy decision time per tick at 100, 1,000 and 10,000 guests, on synthetic snapshots.

The default policy is a pure function of a snapshot and its state, so its cost per tick is the daemon's
whole CPU overhead besides collecting stats. This builds snapshots of N guests with varied sizes, use and
stats (a few without stats, with autodeflate, Windows-style), lets the policy settle, then times
``decide`` over a series of ticks whose guests' use drifts, as in a running host. The reference policies
(MOM, Proxmox) are timed on the same snapshots for comparison. Target: under 10 ms at 1,000 guests.

Run: ``.venv/bin/python bench/bench_policy.py`` (or ``make bench``); ``--sizes``, ``--ticks``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from autoballoon.controller import tune_collector
from autoballoon.model import BalloonConfig, GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, VMState
from autoballoon.policy import Inputs, PolicyState, decide, mom, proxmox
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

TARGET_MS_AT_1000 = 10.0
INTERVAL_S = 2.0
EPOCH = 1_700_000_000.0


def snapshots(n: int, ticks: int, seed: int = 0) -> list[HostSnapshot]:
    """``ticks`` snapshots of ``n`` guests, 2 s apart, whose use drifts and sometimes jumps."""
    rng = np.random.default_rng(seed)
    max_b = rng.choice([2, 4, 8, 16], size=n) * GiB
    used = (max_b * rng.uniform(0.1, 0.7, size=n)).astype(np.int64)
    target = np.maximum(used + 512 * MiB, (max_b * 0.6).astype(np.int64)).clip(max=max_b)
    policies = [GuestPolicy(min_bytes=512 * MiB) if i % 3 else GuestPolicy() for i in range(n)]
    balloons = [BalloonConfig(autodeflate=bool(i % 2), stats_period=5) for i in range(n)]
    no_stats = rng.uniform(size=n) < 0.02
    out: list[HostSnapshot] = []
    for k in range(ticks):
        used = (used * rng.normal(1.0, 0.01, size=n)).astype(np.int64)
        jump = rng.uniform(size=n) < 0.01
        used = np.where(jump, used + 256 * MiB, used).clip(64 * MiB, (max_b * 0.9).astype(np.int64))
        now = k * INTERVAL_S
        guests = []
        for i in range(n):
            actual = int(target[i])
            stats = GuestStats()
            if not no_stats[i]:
                avail = max(0, actual - int(used[i]))
                stats = GuestStats(
                    total=actual,
                    available=avail,
                    free=avail // 2,
                    caches=avail // 2,
                    swap_in=0,
                    swap_out=0,
                    major_faults=1000,
                    last_update=EPOCH + now,
                )
            guests.append(
                GuestSnapshot(
                    name=f"vm-{i:05d}",
                    state=VMState.RUNNING,
                    max_bytes=int(max_b[i]),
                    target_bytes=actual,
                    actual_bytes=actual,
                    stats=stats,
                    balloon=balloons[i],
                    policy=policies[i],
                    os_type="windows" if i % 17 == 0 else "linux",
                )
            )
        ram = int(max_b.sum() * 0.8)
        out.append(
            HostSnapshot(
                time=now,
                wall_time=EPOCH + now,
                mem_total=ram,
                mem_available=ram - int(target.sum()) - 2 * GiB,
                guests=tuple(guests),
            )
        )
    return out


def shrinking_fleet(n: int, ticks: int, seed: int = 7) -> list[float]:
    """Seconds per ``decide`` over a fleet that boots at max and is then shrunk, each plan applied as a
    backend would (targets and balloons move): the first ticks shrink every guest, the slowest case
    (an action and a budget cut per guest). Use drifts by a few MiB per tick."""
    rng = np.random.default_rng(seed)
    max_b = rng.choice([1, 2, 4, 8], size=n) * GiB
    used = (max_b * rng.integers(10, 80, size=n) // 100).astype(np.int64)
    target = max_b.copy()
    autodeflate = [bool(i % 2) for i in range(n)]
    balloons = [BalloonConfig(autodeflate=a, stats_period=1) for a in autodeflate]
    ram = int(max_b.sum()) * 8
    state = PolicyState()
    tunables = Tunables()
    times = []
    for k in range(ticks):
        now = k * INTERVAL_S
        used = np.clip(used + rng.integers(-8, 9, size=n) * MiB, 64 * MiB, target)
        guests = []
        for i in range(n):
            mx, tg, u = int(max_b[i]), int(target[i]), int(used[i])
            total = mx if autodeflate[i] else tg
            hidden = mx - tg if autodeflate[i] else 0
            stats = GuestStats(
                total=total,
                available=max(0, total - u - hidden),
                swap_in=0,
                major_faults=0,
                last_update=EPOCH + now,
            )
            guests.append(
                GuestSnapshot(f"vm{i:05d}", VMState.RUNNING, mx, tg, tg, stats=stats, balloon=balloons[i])
            )
        snap = HostSnapshot(now, EPOCH + now, ram, ram // 4, guests=tuple(guests))
        t0 = time.perf_counter()
        plan, state = decide(snap, Inputs(), state, tunables)
        times.append(time.perf_counter() - t0)
        for action in plan.actions:
            target[int(action.vm[2:])] = action.new_target
    return times[1:]


def time_ticks(snaps: list[HostSnapshot], tick: Callable[[HostSnapshot], object], warmup: int) -> list[float]:
    """Seconds (perf_counter) per call, after ``warmup`` untimed calls."""
    times = []
    for k, snap in enumerate(snaps):
        t0 = time.perf_counter()
        tick(snap)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def default_policy(tunables: Tunables) -> Callable[[HostSnapshot], object]:
    state = PolicyState()

    def tick(snap: HostSnapshot) -> object:
        nonlocal state
        plan, state = decide(snap, Inputs(), state, tunables)
        return plan

    return tick


def mom_policy() -> Callable[[HostSnapshot], object]:
    state = mom.MomState()

    def tick(snap: HostSnapshot) -> object:
        nonlocal state
        state = mom.observe(state, snap)
        return mom.decide(state, snap)

    return tick


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="guest counts, comma-separated")
    parser.add_argument("--ticks", type=int, default=30, help="timed ticks per size (after 5 warm-up ticks)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    warmup = 5
    print(f"command: {sys.executable} bench/bench_policy.py --sizes {args.sizes} --ticks {args.ticks}")
    print("policy decision time per tick (perf_counter around the call; synthetic snapshots)")
    print(f"{'guests':>8} {'policy':>12} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'us/guest':>9}")
    verdict = 0
    for n in sizes:
        ticks = max(warmup + 3, min(args.ticks, 300_000 // n) + warmup)
        snaps = snapshots(n, ticks)
        # The pre-built snapshots are the bench's own heap, many times what a daemon holds: left to the
        # collector, its full passes over them land in the timed calls (p99 37 ms against a p50 of 11).
        gc.collect()
        gc.freeze()
        tune_collector(Tunables())  # the collector runs as in the daemon (`autoballoon run`)
        for name, tick in (
            ("autoballoon", default_policy(Tunables())),
            ("mom", mom_policy()),
            ("proxmox", proxmox.decide),
        ):
            times = time_ticks(snaps, tick, warmup)
            mean = statistics.fmean(times) * 1e3
            p50 = float(np.percentile(times, 50)) * 1e3
            p99 = float(np.percentile(times, 99)) * 1e3
            print(f"{n:>8} {name:>12} {mean:9.3f} {p50:9.3f} {p99:9.3f} {mean * 1e3 / n:9.2f}")
            if name == "autoballoon" and n == 1000 and mean > TARGET_MS_AT_1000:
                verdict = 1
    if 1000 in sizes:
        times = shrinking_fleet(1000, max(10, min(args.ticks, 40)))
        mean = statistics.fmean(times) * 1e3
        p50 = float(np.percentile(times, 50)) * 1e3
        p99 = float(np.percentile(times, 99)) * 1e3
        print(f"{1000:>8} {'shrinking':>12} {mean:9.3f} {p50:9.3f} {p99:9.3f} {mean * 1e3 / 1000:9.2f}")
        print("  (shrinking: autoballoon on a fleet booted at max, each plan applied; every guest shrinks)")
        if mean > TARGET_MS_AT_1000:
            verdict = 1
        print(
            f"target: autoballoon < {TARGET_MS_AT_1000:g} ms per tick at 1,000 guests: "
            + ("FAIL" if verdict else "ok")
        )
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
