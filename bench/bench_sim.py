"""Simulator throughput: 100 guests x 86,400 one-second steps (a day) with no controller.

The evaluation harness runs policies over day-long 100-guest scenarios, so this figure bounds how fast an
evaluation can be. The target on the project's 2-core machine is under 10 s for the day.

Run: ``.venv/bin/python bench/bench_sim.py`` (or ``make bench``); ``--guests`` and ``--seconds`` resize it.
"""

from __future__ import annotations

import argparse
import sys
import time

from autoballoon.sim import Simulation, loads_scenario

# Ten kinds of guest, replicated to the requested count: every shape and every special behaviour is on
# the path being measured (swap, OOM, autodeflate, stuck, storm, stats refresh).
SCENARIO = """
[host]
ram = "{ram_gib}G"
base_used = "4G"
reserve = "4G"
cpus = 64

[run]
duration = {seconds}

[[guest]]
name = "web"
max = "8G"
target = "5G"
count = {k}
demand = {{ shape = "diurnal", low = "1G", high = "4G", noise = 0.05 }}

[[guest]]
name = "db"
max = "16G"
target = "10G"
autodeflate = true
count = {k}
demand = {{ shape = "steps", points = [[0, "6G"], [7200, "9G"], [20000, "12G"], [40000, "6G"]] }}

[[guest]]
name = "ci"
max = "4G"
target = "2G"
count = {k}
demand = {{ shape = "spikes", base = "512M", height = "2G", every = 900, length = 240 }}

[[guest]]
name = "win"
max = "4G"
target = "3G"
os = "windows"
cpu_storm = true
stats_period = 10
count = {k}
demand = {{ shape = "sine", mean = "2G", amplitude = "512M", period = 7200 }}

[[guest]]
name = "legacy"
max = "2G"
stats = false
count = {k}
demand = {{ shape = "constant", level = "1200M" }}

[[guest]]
name = "stuck"
max = "2G"
target = "1G"
stuck = true
count = {k}
demand = {{ shape = "ramp", from = "512M", to = "1500M" }}

[[guest]]
name = "batch"
max = "6G"
target = "2G"
swap = "512M"
count = {k}
demand = {{ shape = "ramp", from = "1G", to = "5G", start = 3600, length = 36000 }}

[[guest]]
name = "cache"
max = "8G"
count = {k}
demand = {{ shape = "constant", level = "2G", noise = 0.1 }}

[[guest]]
name = "office"
max = "4G"
target = "3G"
count = {k}
demand = {{ shape = "diurnal", low = "600M", high = "2500M", peak_hour = 11 }}

[[guest]]
name = "api"
max = "4G"
target = "2G"
count = {k}
demand = {{ shape = "sine", mean = "1500M", amplitude = "700M", period = 3600, noise = 0.02 }}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100, help="guests (a multiple of 10)")
    parser.add_argument("--seconds", type=int, default=86_400, help="virtual seconds, in 1 s steps")
    parser.add_argument("--limit", type=float, default=10.0, help="fail (exit 1) above this many seconds")
    args = parser.parse_args(argv)
    k = max(1, args.guests // 10)
    text = SCENARIO.format(k=k, seconds=args.seconds, ram_gib=6 * 10 * k)
    scenario = loads_scenario(text, source="bench_sim.py")

    t0 = time.perf_counter()
    sim = Simulation(scenario, seed=0)
    t_build = time.perf_counter() - t0
    t1 = time.perf_counter()
    sim.run(args.seconds)
    t_run = time.perf_counter() - t1

    n = sim.n
    reps = 200
    t2 = time.perf_counter()
    for _ in range(reps):
        sim.snapshot()
    t_snap = (time.perf_counter() - t2) / reps
    steps = args.seconds
    total = t_build + t_run
    print(f"command: {sys.executable} bench/bench_sim.py --guests {args.guests} --seconds {args.seconds}")
    print(f"simulator: {n} guests x {steps} one-second steps, no controller")
    print(f"  build (demand tables):  {t_build:7.2f} s")
    print(f"  run:                    {t_run:7.2f} s")
    print(f"  wall time:              {total:7.2f} s  (limit {args.limit:g} s)")
    print(f"  steps/s:                {steps / t_run:12,.0f}")
    print(f"  guest-steps/s:          {n * steps / t_run:12,.0f}")
    print(f"  snapshot() of {n} guests: {t_snap * 1e3:7.2f} ms  (what a policy tick reads)")
    print(
        f"  day end: oom kills {int(sim.oom_kills.sum())}, under pressure {int(sim.under_pressure.sum())}, "
        f"host available {sim.host_available / 2**30:.1f} GiB"
    )
    if total > args.limit:
        print(f"FAIL: {total:.2f} s is above the {args.limit:g} s limit")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
