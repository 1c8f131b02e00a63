"""Server overhead: what 20 clients polling the dashboard, the API and /metrics add to a controller tick.

The daemon serves HTTP from threads of the same process as its control loop, so every request competes
with a tick for the interpreter. This runs the demo host (``sim:///demo``, the controller on its own
clock) in alternating phases: no HTTP server at all, then the server with 20 clients that each fetch
``/api/v1/vms``, ``/metrics`` and ``/api/v1/dashboard`` once a second (from another process, like real
clients). It prints the mean tick duration of each kind of phase and the difference. Target: < 5 %.

Run: ``.venv/bin/python bench/bench_server.py`` (``--phase-seconds``, ``--rounds``, ``--clients``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server import serve_controller

PATHS = ("/api/v1/vms", "/metrics", "/api/v1/dashboard")
TARGET_PERCENT = 5.0

CLIENT = """
import http.client, sys, threading, time
host, port, clients, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
paths = sys.argv[5:]
counts = [0, 0]
lock = threading.Lock()
def poll(offset):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    time.sleep(offset)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        begun = time.monotonic()
        for path in paths:
            ok = 0
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
            with lock:
                counts[0 if ok else 1] += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - begun)))
threads = [threading.Thread(target=poll, args=(i / clients,)) for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(counts[0], counts[1])
"""


def run_phase(
    controller: Controller, seconds: float, clients: int, *, serve: bool
) -> tuple[list[float], str]:
    """Run the controller for ``seconds`` real seconds; return its tick durations and a client summary."""
    durations: list[float] = []
    server = serve_controller(controller, "127.0.0.1:0") if serve else None

    def after_tick(c: Controller) -> None:
        if server is not None:
            server.on_tick(c)
        last = c.status(journal_entries=0).last_tick_s
        if last is not None:
            durations.append(last)

    cpu0, wall0 = time.process_time(), time.monotonic()
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), kwargs={"on_tick": after_tick})
    loop.start()
    summary = "no server"
    try:
        if server is not None:
            host, port = server.http.address
            out = subprocess.run(
                [sys.executable, "-c", CLIENT, host, str(port), str(clients), str(seconds), *PATHS],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            summary = f"{out[0]} requests answered, {out[1]} failed"
        else:
            time.sleep(seconds)
    finally:
        stop.set()
        loop.join()
        if server is not None:
            server.stop()
    cpu_share = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100
    return durations, f"{summary}; daemon process CPU {cpu_share:.1f} % of a core"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--speed", type=float, default=20.0, help="virtual seconds per real second")
    args = parser.parse_args()

    backend = SimBackend.open(f"sim:///demo?speed={args.speed:g}")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    run_phase(controller, args.warmup_seconds, 0, serve=False)  # the first ticks act a lot: not measured
    base: list[float] = []
    loaded: list[float] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)  # ABBA: drift cancels out
        for serve in order:
            d, summary = run_phase(controller, args.phase_seconds, args.clients, serve=serve)
            (loaded if serve else base).extend(d)
            print(f"round {r + 1}: {'server + clients' if serve else 'no server       '}: {summary}")

    def line(name: str, xs: list[float]) -> str:
        q = statistics.quantiles(xs, n=20)
        return (
            f"{name:<28} {len(xs):5d} ticks  mean {statistics.fmean(xs) * 1e3:.3f} ms  "
            f"median {statistics.median(xs) * 1e3:.3f} ms  p95 {q[18] * 1e3:.3f} ms"
        )

    print("command: " + " ".join([sys.executable, *sys.argv]))
    print(line("no HTTP server", base))
    print(line(f"server + {args.clients} clients", loaded))
    added = (statistics.fmean(loaded) / statistics.fmean(base) - 1) * 100
    added_median = (statistics.median(loaded) / statistics.median(base) - 1) * 100
    verdict = "OK" if added < TARGET_PERCENT else "ABOVE TARGET"
    print(
        f"added to the controller's tick time: {added:+.1f} % (mean), {added_median:+.1f} % (median); "
        f"target < {TARGET_PERCENT:g} %: {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
