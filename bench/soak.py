"""Soak: the daemon on 1,000 simulated VMs for a simulated day, with 20 HTTP clients polling it.

Starts ``autoballoon --connect 'sim:///SCENARIO?speed=K' run --listen 127.0.0.1:0`` in a subprocess, the
scenario being ``scenarios/fleet-day.toml`` scaled to 1,000 guests (every ``count`` and host size times
10), in the environment the systemd unit gives it (``contrib/autoballoon.service``). Twenty client threads
(in this process, not the daemon's) each fetch ``/api/v1/vms``, ``/metrics`` and ``/api/v1/dashboard`` once
a second. The daemon's resident memory is sampled every half second; after the warm-up (250 ticks: the
dashboard's history rings and the journal ring are full by then) it must grow by less than
``--max-rss-growth``: the median of the last quarter of the samples against the median of the first quarter
after the warm-up, so that a leak (memory that stays) is caught and a passing peak (20 requests rendered at
once on a loaded machine, whose freed memory the allocator keeps for a while) is not taken for one; the
highest sample may still not pass ``--max-rss-peak-growth``. The controller's tick p99 (from its own
histogram, ``/api/v1/host``) must stay under ``--max-tick-p99-s``, and every request must be answered.

Run: ``make soak`` (the full day: 8,640 ticks at ``--interval 10``) or ``bench/soak.py --interval 2
--sim-seconds 1100`` (a short one, 550 ticks: ``tests/test_soak.py`` runs that in ``make test``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BASE_SCENARIO = ROOT / "scenarios" / "fleet-day.toml"
PATHS = ("/api/v1/vms", "/metrics", "/api/v1/dashboard")
DASHBOARD = "/api/v1/dashboard"
#: Every guest group and the host are scaled by this: fleet-day's 100 guests become 1,000.
SCALE = 10
#: Ticks before the memory baseline: the dashboard's history rings (240 points per VM) are full by then.
WARMUP_TICKS = 250
#: Seconds between the daemon's ticks in the full soak: a day is then 8,640 ticks, which a 2-core machine
#: runs in well under an hour (at the default 2 s it would be 43,200).
SOAK_INTERVAL_S = 10.0
#: The bound on the controller's tick p99: half the default 2 s interval, so that 20 clients polling a
#: 1,000-VM daemon never make it miss its cadence. (Measured on the project's 2-core machine while other
#: jobs ran: 0.46-0.48 s; before renderings were shared between clients it was 3.3 s.)
MAX_TICK_P99_S = 1.0
#: Real seconds between two looks at the daemon (its memory, its clock).
SAMPLE_S = 0.5
#: The unit whose environment the daemon runs in (see :func:`unit_environment`).
UNIT = Path(__file__).resolve().parent.parent / "contrib" / "autoballoon.service"
#: The share of the samples after the warm-up whose median is the memory at each end of the measured run:
#: a count of seconds would not do, since an idle machine runs the short soak's 300 measured ticks in 20 s
#: and a loaded one in a minute.
RSS_WINDOW_SHARE = 0.25
#: Fewer samples than this after the warm-up make no measure at all.
MIN_RSS_SAMPLES = 8
#: Growth of the lasting memory (medians, see above) that counts as a leak.
MAX_RSS_GROWTH = 0.10
#: Growth of the highest sample: a peak, not a leak, but one this large would be a fault of its own. (On the
#: project's 2-core machine one short soak in a fresh ``make test`` saw +18 % at its highest sample, where
#: six others saw +2 to +6 %.)
MAX_RSS_PEAK_GROWTH = 0.25
#: Real seconds the daemon may take to print its address (it builds 1,000 guests first).
START_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 30.0


def scaled_scenario(factor: int = SCALE) -> str:
    """fleet-day.toml with every guest ``count`` and the host's sizes multiplied by ``factor``."""
    text = BASE_SCENARIO.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^count = (\d+)$", lambda m: f"count = {int(m.group(1)) * factor}", text)

    def size(m: re.Match[str]) -> str:
        return f'{m.group(1)} = "{int(m.group(2)) * factor}{m.group(3)}"'

    text = re.sub(r'(?m)^(ram|reserve|base_used) = "(\d+)([KMGT])"$', size, text)
    return re.sub(r"(?m)^cpus = (\d+)$", lambda m: f"cpus = {int(m.group(1)) * factor}", text)


@dataclass
class Clients:
    """``count`` threads polling ``PATHS`` once a second each until stopped."""

    host: str
    port: int
    count: int
    #: Requests answered, per client: each one must keep getting answers, however slow the machine.
    answered: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int, offset: float) -> None:
        """Poll like the dashboard page does: its whole history once, then only the points after the
        last ones it got (``since``)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CLIENT_TIMEOUT_S)
        since: object = None
        self.stop.wait(offset)
        while not self.stop.is_set():
            begun = time.monotonic()
            for path in PATHS:
                if path == DASHBOARD and since is not None:
                    path += f"?since={since}"
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    ok, why = resp.status == 200, f"{path}: HTTP {resp.status}"
                    if ok and path.startswith(DASHBOARD):
                        since = json.loads(body)["history_until"]
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=CLIENT_TIMEOUT_S)
                    ok, why = False, f"{path}: {e!r}"
                with self.lock:
                    if ok:
                        self.answered[index] += 1
                    else:
                        self.failed.append(why)
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - begun)))
        conn.close()

    def start(self) -> list[threading.Thread]:
        self.answered = [0] * self.count
        threads = [
            threading.Thread(target=self.run, args=(i, i / self.count), daemon=True)
            for i in range(self.count)
        ]
        for t in threads:
            t.start()
        return threads


@dataclass(frozen=True)
class Result:
    sim_seconds: float
    real_seconds: float
    ticks: int
    #: Medians of the first and of the last quarter of the samples after the warm-up; the highest sample.
    rss_warm_mib: float
    rss_end_mib: float
    rss_max_mib: float
    tick_p50_s: float
    tick_p99_s: float
    answered_per_client: tuple[int, ...]
    failed: tuple[str, ...]

    @property
    def answered(self) -> int:
        return sum(self.answered_per_client)

    @property
    def rss_growth(self) -> float:
        """What the daemon kept: a leak shows here."""
        return self.rss_end_mib / self.rss_warm_mib - 1

    @property
    def rss_peak_growth(self) -> float:
        return self.rss_max_mib / self.rss_warm_mib - 1


def get_json(host: str, port: int, path: str) -> dict[str, object]:
    conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT_S)
    try:
        conn.request("GET", path)
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The environment the systemd unit gives the daemon (but its URI: the soak names its own host), so
    that the soak measures the daemon as it runs on a host."""
    env = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    env.pop("AUTOBALLOON_URI", None)
    return env


def soak(
    sim_seconds: float, speed: float, clients: int, interval_s: float, warmup_ticks: int = WARMUP_TICKS
) -> Result:
    """Run the daemon until its simulated clock passes ``sim_seconds``; measure it on the way."""
    with tempfile.TemporaryDirectory(prefix="autoballoon-soak-") as tmp:
        scenario = Path(tmp) / "fleet-1000.toml"
        scenario.write_text(scaled_scenario(), encoding="utf-8")
        uri = f"sim://{scenario}?speed={speed:g}"
        cmd = [sys.executable, "-m", "autoballoon", "--connect", uri, "run", "--listen", "127.0.0.1:0"]
        cmd += ["--interval", f"{interval_s:g}"]
        err = (Path(tmp) / "stderr").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **unit_environment(), "PYTHONUNBUFFERED": "1"},
        )
        try:
            return _measure(proc, sim_seconds, clients, warmup_ticks)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err.close()
            if proc.returncode not in (0, -signal.SIGTERM):
                print((Path(tmp) / "stderr").read_text(errors="replace")[-4000:], file=sys.stderr)


def _measure(proc: subprocess.Popen[bytes], sim_seconds: float, clients: int, warmup_ticks: int) -> Result:
    assert proc.stdout is not None
    started = time.monotonic()
    line = proc.stdout.readline().decode()
    match = re.search(r"dashboard http://([\d.]+):(\d+)/", line)
    if match is None:
        raise RuntimeError(f"the daemon did not print its address: {line!r}")
    host, port = match.group(1), int(match.group(2))
    daemon = psutil.Process(proc.pid)
    polling = Clients(host, port, clients)
    threads: list[threading.Thread] = []
    rss: list[float] = []  # after the warm-up, MiB
    now = 0.0
    try:
        while now < sim_seconds:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            if time.monotonic() - started > START_TIMEOUT_S and now == 0.0:
                raise RuntimeError("the daemon never ticked")
            time.sleep(SAMPLE_S)
            try:
                view = get_json(host, port, "/api/v1/host")
                now, ticks = float(view["time"]), int(view["ticks"])  # type: ignore[arg-type,call-overload]
            except (OSError, KeyError, ValueError):
                continue  # no snapshot yet (503)
            if not threads:  # the clients start once there is something to answer them with
                threads = polling.start()
            if ticks >= warmup_ticks:
                rss.append(daemon.memory_info().rss / 2**20)
        host_view = get_json(host, port, "/api/v1/host")
    finally:
        polling.stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT_S)
    if len(rss) < MIN_RSS_SAMPLES:
        raise RuntimeError(f"{len(rss)} memory samples after the warm-up ({warmup_ticks} ticks): too short")
    window = max(1, int(len(rss) * RSS_WINDOW_SHARE))
    return Result(
        sim_seconds=now,
        real_seconds=time.monotonic() - started,
        ticks=int(host_view["ticks"]),  # type: ignore[call-overload]
        rss_warm_mib=statistics.median(rss[:window]),
        rss_end_mib=statistics.median(rss[-window:]),
        rss_max_mib=max(rss),
        tick_p50_s=float(host_view["tick_p50_s"]),  # type: ignore[arg-type]
        tick_p99_s=float(host_view["tick_p99_s"]),  # type: ignore[arg-type]
        answered_per_client=tuple(polling.answered),
        failed=tuple(polling.failed),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim-seconds", type=float, default=86400.0, help="simulated seconds (a day)")
    parser.add_argument(
        "--speed",
        type=float,
        default=1000.0,
        help="virtual seconds per real second (the most the daemon keeps up with)",
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--max-rss-growth", type=float, default=MAX_RSS_GROWTH, help="lasting, after warm-up, as a fraction"
    )
    parser.add_argument(
        "--max-rss-peak-growth", type=float, default=MAX_RSS_PEAK_GROWTH, help="highest sample, as a fraction"
    )
    parser.add_argument("--max-tick-p99-s", type=float, default=MAX_TICK_P99_S)
    parser.add_argument("--interval", type=float, default=SOAK_INTERVAL_S, help="the daemon's --interval")
    parser.add_argument("--warmup-ticks", type=int, default=WARMUP_TICKS, help="ticks before the baseline")
    args = parser.parse_args()
    r = soak(args.sim_seconds, args.speed, args.clients, args.interval, args.warmup_ticks)
    print("command: " + " ".join([sys.executable, *sys.argv]))
    print(
        f"{r.sim_seconds:.0f} simulated s in {r.real_seconds:.0f} real s, {r.ticks} ticks, 1000 VMs, "
        f"{args.clients} clients: {r.answered} requests answered, {len(r.failed)} failed"
    )
    print(f"daemon RSS after warm-up {r.rss_warm_mib:.1f} MiB, at the end {r.rss_end_mib:.1f} MiB: "
          f"{r.rss_growth * 100:+.1f} % (limit {args.max_rss_growth * 100:g} %); highest "
          f"{r.rss_max_mib:.1f} MiB: {r.rss_peak_growth * 100:+.1f} % "
          f"(limit {args.max_rss_peak_growth * 100:g} %)")  # fmt: skip
    print(f"tick p50 {r.tick_p50_s * 1e3:.1f} ms, p99 {r.tick_p99_s * 1e3:.1f} ms "
          f"(limit {args.max_tick_p99_s * 1e3:g} ms; from the daemon's tick histogram)")  # fmt: skip
    ok = (
        r.rss_growth < args.max_rss_growth
        and r.rss_peak_growth < args.max_rss_peak_growth
        and r.tick_p99_s < args.max_tick_p99_s
        and not r.failed
    )
    for why in r.failed[:10]:
        print("failed: " + why)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
