"""Measure what any balloon daemon is up against on real guests (``autoballoon evaluate --real --calibrate``).

Three measurements on fresh 512 MiB rig guests (stats period 1 s), each repeated:

- **Stats latency**: the guest's workload takes 64 MiB at once; how long until libvirt's balloon stats
  (``usable`` = MemAvailable) show at least 48 MiB of it, counted from when the allocation finished.
- **Balloon speed**: the target moves 512 -> 128 MiB (inflate) and back (deflate) on an idle guest, and
  down by 128 MiB on a guest whose workload must first be swapped out; MiB/s until ``actual`` arrives.
- **The OOM edge**: a guest shrunk until its MemAvailable is about N MiB starts growing, either at a
  rate (a ramp) or all at once. An ideal daemon ticking every 2 s (first tick at a random phase) gives the
  guest its whole memory back at the first tick whose libvirt stats show MemAvailable down by 8 MiB or
  more. Each trial records whether the guest's OOM killer fired first, the guest's own MemAvailable and
  libvirt's just before it did, and when the ideal daemon reacted. No real policy can do better than this
  daemon, so a growth that kills here kills under any 2 s-tick policy that leaves only N MiB.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autoballoon.evaluate.real.bench import lease
from autoballoon.evaluate.real.calibration import Calibration, OomTrial
from autoballoon.evaluate.real.harness import libvirt_balloon
from autoballoon.rig.domains import Guest, GuestSpec
from autoballoon.rig.errors import RigError
from autoballoon.rig.session import RigSession, open_session
from autoballoon.units import KiB, MiB

REPEATS = 6
STATS_ALLOC = 64 * MiB
STATS_SEEN = 48 * MiB
POLL_S = 0.02
STATS_TIMEOUT_S = 10.0
SMALL = 128 * MiB
GUEST = 512 * MiB
SWAP = 512 * MiB
SWAP_HOG = 320 * MiB
SWAP_EXTRA = 64 * MiB
BALLOON_TIMEOUT_S = 60.0
#: Close enough to a target: the guest's balloon moves in pages, libvirt reports KiB.
ARRIVED = 1 * MiB
TICK_S = 2.0
REACT_DROP = 8 * MiB
AVAILABLE_LEVELS = (32 * MiB, 64 * MiB, 128 * MiB)
RAMP_RATES = (10 * MiB, 20 * MiB, 40 * MiB, 80 * MiB)
#: At-once sizes, as shares of the guest's MemAvailable.
ALLOC_SHARES = (0.5, 0.75, 1.0, 1.5)
#: Each OOM-edge trial runs this often (the daemon's tick phase is random, so outcomes vary).
TRIAL_REPEATS = 2
TRIAL_S = 15.0
TRIAL_POLL_S = 0.1
SETTLE_S = 2.5
SEED = 1


def _wait(probe: Callable[[], bool], timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(POLL_S)
    return None


def stats_latency(guest: Guest, dom: Any) -> list[float]:
    out: list[float] = []
    for _ in range(REPEATS):
        time.sleep(1.0 + random.random())  # a random phase against the guest's 1 s stats timer
        before = libvirt_balloon(dom)["available"] or 0

        def seen(before: int = before) -> bool:
            return (libvirt_balloon(dom)["available"] or before) <= before - STATS_SEEN

        guest.control.alloc(STATS_ALLOC // MiB)
        took = _wait(seen, STATS_TIMEOUT_S)
        guest.control.free_all()
        if took is not None:
            out.append(round(took, 3))
    return out


def _move(dom: Any, target: int) -> float | None:
    """Set the balloon target (kept within [64 MiB, the guest's memory]); bytes/s until actual arrives
    (None if it never did)."""
    target = min(GUEST, max(SMALL // 2, target))
    start_actual = libvirt_balloon(dom)["actual"] or 0
    dom.setMemoryFlags(target // KiB, 0)
    took = _wait(lambda: abs((libvirt_balloon(dom)["actual"] or 0) - target) <= ARRIVED, BALLOON_TIMEOUT_S)
    return None if not took else abs(start_actual - target) / took


def balloon_speed(dom: Any) -> tuple[list[float], list[float]]:
    inflate: list[float] = []
    deflate: list[float] = []
    for _ in range(REPEATS):
        if (v := _move(dom, SMALL)) is not None:
            inflate.append(round(v))
        time.sleep(0.5)
        if (v := _move(dom, GUEST)) is not None:
            deflate.append(round(v))
        time.sleep(0.5)
    return inflate, deflate


def swapping_inflate(guest: Guest, dom: Any) -> list[float]:
    """Inflate a guest with a 320 MiB workload by all it has available plus 64 MiB, which it must swap
    out first: the balloon then waits on the guest's swap disk."""
    out: list[float] = []
    for _ in range(max(1, REPEATS // 2)):
        guest.control.alloc(SWAP_HOG // MiB)
        time.sleep(SETTLE_S)
        available = guest.control.sample().mem_available
        if (v := _move(dom, GUEST - available - SWAP_EXTRA)) is not None:
            out.append(round(v))
        guest.control.free_all()
        _move(dom, GUEST)
    return out


def _shrink_to_available(guest: Guest, dom: Any, level: int) -> int:
    """Inflate the balloon until the guest's MemAvailable is about ``level``; returns what it is."""
    for _ in range(3):
        s = guest.control.sample()
        actual = libvirt_balloon(dom)["actual"] or GUEST
        _move(dom, actual - (s.mem_available - level))
        time.sleep(SETTLE_S)
    return guest.control.sample().mem_available


def oom_trial(
    guest: Guest, dom: Any, level: int, kind: str, size: int, rate: int, rng: random.Random
) -> OomTrial:
    available = _shrink_to_available(guest, dom, level)
    baseline = libvirt_balloon(dom)["available"] or available
    kills0 = guest.control.sample().oom_kill
    cols: dict[str, list[Any]] = {
        k: [] for k in ("t", "guest_available", "libvirt_available", "libvirt_age", "held")
    }
    reacted: list[float] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def daemon() -> None:  # the ideal 2 s-tick daemon
        next_tick = t0 + rng.uniform(0, TICK_S)
        while not stop.is_set():
            stop.wait(max(0.0, next_tick - time.monotonic()))
            next_tick += TICK_S
            seen = libvirt_balloon(dom)["available"]
            if seen is not None and seen <= baseline - REACT_DROP:
                dom.setMemoryFlags(GUEST // KiB, 0)
                reacted.append(round(time.monotonic() - t0, 3))
                return

    reactor = threading.Thread(target=daemon, daemon=True)
    reactor.start()
    guest.control.grow(size, rate)
    kill_s = None
    while (t := time.monotonic() - t0) < TRIAL_S:
        s = guest.control.sample()
        lv = libvirt_balloon(dom)
        cols["t"].append(round(t, 3))
        cols["guest_available"].append(s.mem_available)
        cols["libvirt_available"].append(lv["available"])
        cols["libvirt_age"].append(round(time.time() - lv["last_update"], 3) if lv["last_update"] else None)
        cols["held"].append(s.held)
        if s.oom_kill > kills0:
            kill_s = t
            break
        if s.held >= size and s.held == s.hog_target:
            break
        time.sleep(TRIAL_POLL_S)
    stop.set()
    reactor.join()
    guest.control.shrink()
    _move(dom, GUEST)
    # Before a kill, the sample before the one that saw it; the kill's own sample is already after it.
    n = len(cols["t"]) - (1 if kill_s is not None else 0)
    last = n - 1 if kill_s is not None and n > 0 else None
    return OomTrial(
        level=level,
        available=available,
        kind=kind,
        size=size,
        rate=rate,
        killed=kill_s is not None,
        reacted_s=reacted[0] if reacted else None,
        kill_s=kill_s,
        min_available=min(cols["guest_available"][: max(n, 1)]),
        guest_available_before_kill=None if last is None else cols["guest_available"][last],
        libvirt_available_before_kill=None if last is None else cols["libvirt_available"][last],
        libvirt_age_before_kill_s=None if last is None else cols["libvirt_age"][last],
        samples=cols,
    )


def _trials() -> list[tuple[int, str, int, int]]:
    """(available level, kind, size, rate) of every OOM-edge trial."""
    out: list[tuple[int, str, int, int]] = []
    for level in AVAILABLE_LEVELS:
        out += [(level, "ramp", level + 2 * SMALL, rate) for rate in RAMP_RATES]
        out += [(level, "alloc", round(level * share) // MiB * MiB, 0) for share in ALLOC_SHARES]
    return out * TRIAL_REPEATS


def _run_trials(pairs: Sequence[tuple[Guest, Any]], rng: random.Random) -> list[OomTrial]:
    """The trials shared out over the guests, each guest running its share one after another."""
    todo = _trials()
    results: list[OomTrial | None] = [None] * len(todo)
    seeds = [rng.randrange(2**32) for _ in todo]
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        guest, dom = pairs[k]
        try:
            for i in range(k, len(todo), len(pairs)):
                level, kind, size, rate = todo[i]
                results[i] = oom_trial(guest, dom, level, kind, size, rate, random.Random(seeds[i]))
        except BaseException as exc:  # raised below, once every worker has stopped
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(pairs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise RigError(f"an OOM-edge trial failed: {failures[0]!r}") from failures[0]
    return [r for r in results if r is not None]


def calibrate(*, lease_path: Path | None = None, progress: Callable[[str], None] = print) -> Calibration:
    rng = random.Random(SEED)
    random.seed(SEED)
    with lease(lease_path):
        started = time.monotonic()
        session: RigSession = open_session()
        try:
            guests = session.boot([GuestSpec()] * 4 + [GuestSpec(swap_bytes=SWAP)])
            conn = session.connection()
            doms = [conn.lookupByName(g.name) for g in guests]
            progress("calibration: stats latency and balloon speed")
            latency = stats_latency(guests[0], doms[0])
            inflate, deflate = balloon_speed(doms[1])
            swapping = swapping_inflate(guests[4], doms[4])
            progress("calibration: OOM edge")
            trials = _run_trials(list(zip(guests[:4], doms[:4], strict=True)), rng)
        finally:
            session.close()
    return Calibration(
        stats_latency_s=tuple(latency),
        inflate_bytes_s=tuple(inflate),
        deflate_bytes_s=tuple(deflate),
        inflate_swapping_bytes_s=tuple(swapping),
        oom_trials=tuple(trials),
        wall_s=round(time.monotonic() - started, 1),
    )
