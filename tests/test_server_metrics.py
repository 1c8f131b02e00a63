"""``/metrics`` scraped over HTTP and parsed with Prometheus' own text parser, checked against the source."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.model import GuestSnapshot, VMState
from autoballoon.server import RunningServer, metrics, serve
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.metrics import make_registry
from autoballoon.server.source import ServerView
from autoballoon.server.tunables import TUNABLES
from autoballoon.state import StateStore
from autoballoon.units import GiB, MiB
from tests.helpers import server as fakes
from tests.helpers.server import TICKS_S, FakeSource

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, host: str) -> tuple[Samples, dict[str, str]]:
    """Every sample, keyed by name and labels; each must carry ``host``, which the keys then leave out."""
    with urllib.request.urlopen(url + "metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            labels = dict(s.labels)
            assert labels.pop("host", None) == host, f"{s.name}{s.labels} lacks host={host!r}"
            samples[(s.name, tuple(sorted(labels.items())))] = s.value
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
    samples, types = scrape(srv.url, "fakehost")
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
    assert samples[("autoballoon_tick_duration_seconds_count", ())] == len(TICKS_S)
    assert samples[("autoballoon_tick_duration_seconds_bucket", (("le", "0.005"),))] == 2
    assert samples[("autoballoon_tick_duration_seconds_bucket", (("le", "0.01"),))] == 6
    assert samples[("autoballoon_tick_duration_seconds_bucket", (("le", "+Inf"),))] == 7
    assert samples[("autoballoon_tick_duration_seconds_sum", ())] == pytest.approx(sum(TICKS_S))
    assert samples[("autoballoon_actions_total", (("direction", "shrink"), ("reason", "idle")))] == 10
    assert samples[("autoballoon_backend_errors_total", ())] == 3
    assert samples[("autoballoon_backend_reconnects_total", ())] == 1


def test_metrics_of_the_real_controller_match_the_simulated_host() -> None:
    backend = SimBackend.open("sim:///demo?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    srv = serve(source, "127.0.0.1:0")
    try:
        for _ in range(5):
            controller.tick()
            source.on_tick(controller)
            srv.sampler.sample_once()
            backend.clock.sleep(controller.config.interval_s)
        samples, _ = scrape(srv.url, "demo-host")
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


def families(view: ServerView, **kw: Any) -> Samples:
    """The samples a registry over ``view`` exports, keyed by name and every label (host included)."""
    text = generate_latest(make_registry(lambda: view, **kw)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fleet_view() -> ServerView:
    """The fake host with one shut-off VM, one balloon that never answered and one guest OOM count."""
    base = FakeSource().state
    assert base.snapshot is not None and base.plan is not None
    guests = (
        *base.snapshot.guests,
        fakes.guest("off", 4, 4096, state=VMState.SHUTOFF),
        replace(fakes.guest("mute", 2, 2048), actual_bytes=None),
    )
    guests = tuple(replace(g, stats=replace(g.stats, oom_kills=2)) if g.name == "db" else g for g in guests)
    status = {**base.plan.status, "off": "excluded", "mute": "no-stats"}
    return replace(
        base,
        snapshot=replace(base.snapshot, guests=guests),
        plan=replace(base.plan, status=status),
        host_short=True,
        reserve_spent_bytes=300 * MiB,
        last_tick_at=1_800_000_000.5,
    )


def test_fleet_families_sum_per_host_and_count_states() -> None:
    samples = families(fleet_view())
    h = ("host", "fakehost")
    # running VMs only: web 4 GiB - 3 GiB, db 8 - 6, batch 2 - 1; the mute balloon counts as holding 0
    assert samples[("autoballoon_host_reclaimed_bytes", (h, ("measure", "balloon")))] == 4 * GiB
    assert samples[("autoballoon_vm_reclaimed_bytes", (h, ("measure", "balloon"), ("vm", "db")))] == 2 * GiB
    assert ("autoballoon_vm_reclaimed_bytes", (h, ("measure", "balloon"), ("vm", "off"))) not in samples
    counts = {k[1][1][1]: v for k, v in samples.items() if k[0] == "autoballoon_host_vms"}
    assert counts == {
        "managed": 2,
        "excluded": 1,
        "no-stats": 1,
        "stuck": 1,
        "quarantined": 0,
        "manual-hold": 0,
    }
    assert samples[("autoballoon_host_short", (h,))] == 1
    assert samples[("autoballoon_host_reserve_spent_bytes", (h,))] == 300 * MiB
    assert samples[("autoballoon_last_tick_timestamp_seconds", (h,))] == 1_800_000_000.5
    assert samples[("autoballoon_tick_interval_seconds", (h,))] == 2.0
    assert samples[("autoballoon_vm_oom_kills_total", (h, ("vm", "db")))] == 2
    assert ("autoballoon_vm_oom_kills_total", (h, ("vm", "web"))) not in samples  # not reported: absent
    assert all(dict(labels).get("host") == "fakehost" for _, labels in samples)


def test_a_measure_unknown_for_one_running_vm_has_no_host_total(monkeypatch: pytest.MonkeyPatch) -> None:
    def rss(g: GuestSnapshot) -> int | None:
        return None if g.name == "web" else g.max_bytes // 2

    monkeypatch.setattr(metrics, "RECLAIM_MEASURES", (*metrics.RECLAIM_MEASURES, ("host_rss", rss)))
    samples = families(fleet_view())
    totals = {k[1][1][1] for k in samples if k[0] == "autoballoon_host_reclaimed_bytes"}
    assert totals == {"balloon"}  # a partial sum would look like memory handed back to the guests
    per_vm = {
        k[1][2][1] for k in samples if k[0] == "autoballoon_vm_reclaimed_bytes" and k[1][1][1] == "host_rss"
    }
    assert per_vm == {"db", "batch", "mute"}


def test_nothing_is_exported_before_the_host_has_a_name() -> None:
    assert families(ServerView()) == {}
    named = families(ServerView(), host="hv-7")
    assert named[("autoballoon_backend_errors_total", (("host", "hv-7"),))] == 0
    base = FakeSource().state
    assert base.snapshot is not None
    anonymous = replace(base, snapshot=replace(base.snapshot, hostname=""))
    hosts = {dict(labels)["host"] for _, labels in families(anonymous)}
    assert hosts == {socket.gethostname()}


def test_a_tick_histogram_handed_in_gains_the_host_label() -> None:
    hist = Histogram("autoballoon_tick_duration_seconds", "Tick time.", registry=None, buckets=(0.01, 0.1))
    hist.observe(0.005)
    hist.observe(0.05)
    samples = families(FakeSource().state, tick_histogram=hist)
    h = ("host", "fakehost")
    assert samples[("autoballoon_tick_duration_seconds_count", (h,))] == 2
    assert samples[("autoballoon_tick_duration_seconds_bucket", (h, ("le", "0.01")))] == 1
    assert samples[("autoballoon_tick_duration_seconds_bucket", (h, ("le", "+Inf")))] == 2
    # the view's own histogram (7 ticks in the fake) is not exported beside it
    assert sum(1 for name, _ in samples if name == "autoballoon_tick_duration_seconds_count") == 1


def test_the_controller_source_stamps_each_tick_on_the_real_clock() -> None:
    backend = SimBackend.open("sim:///demo")  # its wall clock is virtual: 1.7e9 plus simulated seconds
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    assert source.view().last_tick_at is None
    before = time.time()
    controller.tick()
    source.on_tick(controller)
    after = time.time()
    view = source.view()
    assert view.last_tick_at is not None and before <= view.last_tick_at <= after
    assert view.host_short == controller.status().host_short
    source.on_tick(controller)  # no new tick: the stamp stays
    assert source.view().last_tick_at == view.last_tick_at


def test_journal_and_state_write_errors_are_exported(tmp_path: Path) -> None:
    """A full disk under the journal (or the state file) costs lines, never the daemon: /metrics says how
    many, so an alert can tell the operator."""
    backend = SimBackend.open("sim:///demo?speed=max")
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory should be")
    store = StateStore(blocked / "state.json")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal("/dev/full"), store=store)
    source = ControllerSource(controller, TUNABLES)
    for _ in range(3):
        controller.tick()
        source.on_tick(controller)
        backend.clock.sleep(controller.config.interval_s)
    text = generate_latest(make_registry(source.view)).decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["autoballoon_journal_errors_total"] == controller.journal.write_errors > 0
    assert samples["autoballoon_state_errors_total"] == store.write_errors > 0
