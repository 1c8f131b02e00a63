"""A fleet on one machine for the Prometheus tests: two autoballoon daemons on two simulated hosts and a
real Prometheus (Debian's ``prometheus`` package) scraping them on loopback with the rules from
``contrib/prometheus/``.

Each daemon is ``autoballoon --connect 'sim:///FILE.toml?speed=N' run --listen 127.0.0.1:0`` in a
subprocess, exactly as an operator starts one; Prometheus runs in its own temporary directory on a free
port. Everything started here is stopped by its PID. The alerts' ``for:`` durations are shortened in the
copy Prometheus loads (the expressions are the shipped ones; ``promtool test rules`` checks the shipped
durations).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests import needs

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "contrib" / "prometheus"
RULE_FILES = ("autoballoon.rules.yml", "autoballoon.alerts.yml")
GRAFANA_DASHBOARD = REPO / "contrib" / "grafana" / "autoballoon-fleet.json"
#: Virtual seconds per real second: a 2 s tick every 0.1 s, so a balloon settles within seconds.
SPEED = 20
#: Prometheus's scrape and rule evaluation period, and what every alert's ``for:`` becomes.
SCRAPE_S = 1
ALERT_FOR = "2s"
START_TIMEOUT_S = 30.0

#: hv-a: room enough, one guest whose balloon driver is wedged. hv-b: more demand than RAM (short), and
#: a guest that never reports stats. Constant demands, so that the balloons settle and the fleet totals
#: can be compared exactly with what each daemon says.
SCENARIOS = {
    "hv-a": """
[host]
name = "hv-a"
ram = "16G"
reserve = "1G"
base_used = "1G"

[[guest]]
name = "wedged"
max = "4G"
target = "3G"
stuck = true
demand = { shape = "constant", level = "1G" }

[[guest]]
name = "web"
count = 2
max = "4G"
demand = { shape = "constant", level = "1G" }

[[guest]]
name = "db"
max = "6G"
autodeflate = true
demand = { shape = "constant", level = "3G" }
""",
    "hv-b": """
[host]
name = "hv-b"
ram = "8G"
reserve = "512M"
base_used = "512M"

[[guest]]
name = "batch"
count = 3
max = "4G"
target = "2G"
autodeflate = true
demand = { shape = "constant", level = "2500M" }

[[guest]]
name = "legacy"
max = "2G"
target = "1G"
stats = false
demand = { shape = "constant", level = "512M" }
""",
}


def need_prometheus() -> tuple[str, str]:
    """``(prometheus, promtool)`` paths, or a skip (a failure under CI=true) naming the package."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if found[0] is None or found[1] is None:
        needs.missing("prometheus and promtool are not installed (Debian: apt-get install prometheus)")
    assert found[0] is not None and found[1] is not None
    return found[0], found[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not go within 15 s: only this PID, never by name."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a test may have paused it
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Daemon:
    host: str
    url: str
    proc: subprocess.Popen[bytes]

    def api(self, path: str) -> Any:
        return http_json(f"{self.url}api/v1/{path}")


@contextmanager
def daemon(host: str, workdir: Path) -> Iterator[Daemon]:
    """``autoballoon run`` on the simulated host ``host``; yields once its API answers."""
    scenario = workdir / f"{host}.toml"
    scenario.write_text(SCENARIOS[host])
    config = workdir / f"{host}-config.toml"
    config.write_text("")  # never the machine's /etc/autoballoon/autoballoon.toml
    log = workdir / f"{host}.log"
    uri = f"sim://{scenario}?speed={SPEED}"
    cmd = [sys.executable, "-m", "autoballoon", "--connect", uri, "run", "--listen", "127.0.0.1:0"]
    cmd += ["--config", str(config), "--journal", str(workdir / f"{host}.jsonl")]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        match = re.search(r"dashboard (http://\S+/)", first)
        assert match, f"`{' '.join(cmd)}` printed {first!r} first; {log.read_text()}"
        running = Daemon(host, match.group(1), proc)
        wait_for(lambda: running.api("host").get("hostname") == host, f"daemon {host}", log, proc=proc)
        yield running
    finally:
        stop(proc)


def wait_for(
    check: Callable[[], object],
    what: str,
    log: Path | None = None,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll ``check`` until it is true; fail with ``log`` when it never is, or ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if check():
                return
        except (OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.2)
    detail = log.read_text() if log is not None and log.exists() else ""
    raise AssertionError(f"{what} not ready within {timeout:g} s (last error: {last}) {detail}")


def shortened_rules(workdir: Path) -> list[Path]:
    """The shipped rule files with every alert's ``for:`` set to :data:`ALERT_FOR`."""
    out = []
    for name in RULE_FILES:
        doc = yaml.safe_load((RULES_DIR / name).read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = ALERT_FOR
        path = workdir / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(path)
    return out


@dataclass(frozen=True)
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; a query error fails with Prometheus's message."""
        body = self.api("query", query=expr)
        assert body["data"]["resultType"] == "vector", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def api(self, endpoint: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            body: dict[str, Any] = http_json(url)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{endpoint} {params}: HTTP {e.code}: {e.read().decode()}") from None
        assert body["status"] == "success", body
        return body

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["data"]["alerts"]
        return alerts


@contextmanager
def prometheus(targets: list[str], workdir: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port) every second with the shipped rules; stopped by PID."""
    binary, _ = need_prometheus()
    rules = shortened_rules(workdir)
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_S}s",
            "scrape_timeout": f"{SCRAPE_S * 800}ms",
            "evaluation_interval": f"{SCRAPE_S}s",
        },
        "rule_files": [str(p) for p in rules],
        "scrape_configs": [{"job_name": "autoballoon", "static_configs": [{"targets": targets}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    cmd = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=workdir)
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}/", proc, log)
        ready = prom.url + "-/ready"
        wait_for(lambda: urllib.request.urlopen(ready, timeout=2).status == 200, "prometheus", log, proc=proc)
        yield prom
    finally:
        stop(proc)


@dataclass(frozen=True)
class Fleet:
    daemons: dict[str, Daemon]
    prometheus: Prometheus


@contextmanager
def fleet(workdir: Path) -> Iterator[Fleet]:
    """Both simulated hosts' daemons and a Prometheus that has scraped each of them at least once."""
    with ExitStack() as stack:
        daemons = {h: stack.enter_context(daemon(h, workdir)) for h in SCENARIOS}
        targets = [urllib.parse.urlsplit(d.url).netloc for d in daemons.values()]
        prom = stack.enter_context(prometheus(targets, workdir))
        wait_for(
            lambda: len(prom.query("host:autoballoon_up:bool == 1")) == len(daemons),
            "both daemons scraped and ticking",
            prom.log,
        )
        yield Fleet(daemons, prom)
