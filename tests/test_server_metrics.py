"""``/metrics`` scraped over HTTP and parsed with Prometheus' own text parser, checked against the source."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server import RunningServer, serve
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import MiB
from tests.server_fakes import FakeSource

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    with urllib.request.urlopen(url + "metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def vm(name: str, metric: str, samples: Samples) -> float:
    return samples[(metric, (("vm", name),))]


@pytest.fixture()
def fake_server() -> Iterator[tuple[RunningServer, FakeSource]]:
    source = FakeSource()
    srv = serve(source, "127.0.0.1:0")
    srv.sampler.sample_once()
    source.tick(2.0)
    srv.sampler.sample_once()
    yield srv, source
    srv.stop()


def test_metrics_match_the_fake_exactly(fake_server: tuple[RunningServer, FakeSource]) -> None:
    srv, source = fake_server
    samples, types = scrape(srv.url)
    snap = source.view().snapshot
    assert snap is not None
    for g in snap.guests:
        assert vm(g.name, "autoballoon_vm_max_bytes", samples) == g.max_bytes
        assert vm(g.name, "autoballoon_vm_target_bytes", samples) == g.target_bytes
        assert vm(g.name, "autoballoon_vm_actual_bytes", samples) == g.actual_bytes
        assert vm(g.name, "autoballoon_vm_guest_used_bytes", samples) == g.used_bytes
        assert vm(g.name, "autoballoon_vm_guest_available_bytes", samples) == g.stats.available
        assert vm(g.name, "autoballoon_vm_stats_age_seconds", samples) == pytest.approx(3.0 + 2.0)
        assert vm(g.name, "autoballoon_vm_swap_in_bytes_total", samples) == g.stats.swap_in
        # the fake adds 1 MiB of swap-in per second: the rate comes from two successive samples
        assert vm(g.name, "autoballoon_vm_swap_in_bytes_per_second", samples) == pytest.approx(MiB)
        assert vm(g.name, "autoballoon_vm_major_faults_per_second", samples) == 0
    assert types["autoballoon_vm_swap_in_bytes"] == "counter"
    status = {(k[1][0][1], k[1][1][1]): v for k, v in samples.items() if k[0] == "autoballoon_vm_status"}
    assert status[("stuck", "batch")] == 1 and status[("managed", "batch")] == 0
    assert status[("managed", "web")] == 1
    assert sum(v for (_, name), v in status.items() if name == "db") == 1
    host = {k[0]: v for k, v in samples.items() if k[0].startswith("autoballoon_host_")}
    assert host["autoballoon_host_memory_total_bytes"] == snap.mem_total
    assert host["autoballoon_host_memory_available_bytes"] == snap.mem_available
    assert host["autoballoon_host_budget_bytes"] == 18 * 1024**3
    assert host["autoballoon_host_reserve_bytes"] == 1024**3
    assert host["autoballoon_host_memory_pressure_some_ratio"] == pytest.approx(0.015)
    assert host["autoballoon_host_overcommit_ratio"] == pytest.approx(snap.overcommit_ratio)
    assert samples[("autoballoon_tick_duration_seconds_count", ())] == 7
    assert samples[("autoballoon_tick_duration_seconds_bucket", (("le", "0.01"),))] == 6
    assert samples[("autoballoon_tick_duration_seconds_bucket", (("le", "+Inf"),))] == 7
    assert samples[("autoballoon_actions_total", (("direction", "shrink"), ("reason", "idle")))] == 10
    assert samples[("autoballoon_backend_errors_total", ())] == 3
    assert samples[("autoballoon_backend_reconnects_total", ())] == 1


def test_metrics_of_the_real_controller_match_the_simulated_host() -> None:
    backend = SimBackend.open("sim:///demo")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    srv = serve(source, "127.0.0.1:0")
    try:
        for _ in range(5):
            controller.tick()
            source.on_tick(controller)
            srv.sampler.sample_once()
            backend.clock.sleep(controller.config.interval_s)
        samples, _ = scrape(srv.url)
        snap = backend.snapshot()  # sleeping moved actual and stats on, not max or host RAM
        last = controller.status()
        for g in snap.guests:
            assert vm(g.name, "autoballoon_vm_max_bytes", samples) == g.max_bytes
            seen = last.snapshot.guest(g.name) if last.snapshot else None
            assert seen is not None
            # the target as the last tick read it, before that tick's own actions
            assert vm(g.name, "autoballoon_vm_target_bytes", samples) == seen.target_bytes
            assert vm(g.name, "autoballoon_vm_actual_bytes", samples) == seen.actual_bytes
            if seen.used_bytes is None:
                assert ("autoballoon_vm_guest_used_bytes", (("vm", g.name),)) not in samples
            else:
                assert vm(g.name, "autoballoon_vm_guest_used_bytes", samples) == seen.used_bytes
        assert samples[("autoballoon_host_memory_total_bytes", ())] == snap.mem_total
        assert samples[("autoballoon_host_reserve_bytes", ())] == last.reserve_bytes
        assert samples[("autoballoon_tick_duration_seconds_count", ())] == 5
        statuses = {k[1][1][1] for k, v in samples.items() if k[0] == "autoballoon_vm_status" and v == 1}
        assert statuses == set(snap.names)  # every VM is in exactly one state
        applied = sum(v for k, v in samples.items() if k[0] == "autoballoon_actions_total")
        assert applied == sum(last.actions_by_direction.values())
        assert applied > 0  # the demo host starts with guests far from what they need
    finally:
        srv.stop()
