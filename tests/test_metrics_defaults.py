"""Prometheus by default: the process, platform and GC series of the default registry, the build, and per
VM its CPU and its actions, each with the ``host`` label every series has; a daemon listening beyond
loopback answers a scrape by this machine's own name; the shipped scrape config names the flags."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon import __version__
from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server import check_listen, serve
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.history import History
from autoballoon.server.metrics import make_registry
from autoballoon.server.tunables import TUNABLES

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "prometheus" / "prometheus.yml"


def _scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
    backend = SimBackend.open("sim:///demo?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    for _ in range(5):
        controller.tick()
        source.on_tick(controller)
        backend.clock.sleep(controller.config.interval_s)
    registry = make_registry(
        source.view, History(TUNABLES.history_points), tick_histogram=source.tick_histogram
    )
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_default_collectors_build_info_and_per_vm_series() -> None:
    samples = _scrape()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert name in samples, sorted(samples)[:20]
        assert all(labels.get("host") == "demo-host" for labels, _ in samples[name])
    [(info, one)] = samples["autoballoon_build_info"]
    assert info["version"] == __version__ and one == 1.0
    cpu = {labels["vm"]: v for labels, v in samples["autoballoon_vm_cpu_seconds_total"]}
    assert set(cpu) == {"web", "db", "ci", "win10", "legacy", "stuck"} and cpu["win10"] > 0
    actions = {
        (labels["vm"], labels["direction"]): v for labels, v in samples["autoballoon_vm_actions_total"]
    }
    assert actions and all(v >= 1 for v in actions.values())
    assert {vm for vm, _ in actions} <= set(cpu)


def test_a_scrape_by_this_machines_name_is_answered() -> None:
    """Listening on every interface, a scrape by host name got 421 without --allow-host."""
    backend = SimBackend.open("sim:///demo?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    controller.tick()
    source = ControllerSource(controller, TUNABLES)
    check_listen("0.0.0.0:0", token_file=None, tls=None, insecure=True)
    server = serve(source, "0.0.0.0:0")
    try:
        port = server.url.rsplit(":", 1)[1].rstrip("/")
        for name in {socket.gethostname(), socket.getfqdn()}:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics", headers={"Host": f"{name}:{port}"}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Host": "evil.example:80"}
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a name this machine does not have was answered")
        except urllib.error.HTTPError as e:
            assert e.code == 421
    finally:
        server.stop()


def test_the_scrape_config_names_the_flags_a_remote_scrape_needs() -> None:
    text = CONTRIB.read_text()
    for flag in ("--listen 0.0.0.0:9180", "--insecure-listen", "--tls-cert", "--allow-host"):
        assert flag in text
    readme = (CONTRIB.parents[2] / "README.md").read_text()
    assert (
        "autoballoon run --listen 0.0.0.0:9180 --insecure-listen" in readme and "--allow-host NAME" in readme
    )
