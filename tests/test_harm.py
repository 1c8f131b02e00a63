"""Harm on every face: a guest that is ballooned is not thereby well. The API's VM objects carry what the
decision sized (demand, OOM floor, need, want) and what the guest does (swap-in, faults), and name the
worst harm; the host view names the guests that suffer and says when the host is short."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.model import GuestDecision
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.history import History, Sampler
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import GiB, MiB
from autoballoon.views import HARMS, harm_of
from tests.helpers.server import asgi_client

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
LINE = 256 * 1024  # swap-in bytes per second at which a guest is "swapping"
DECISION = GuestDecision(
    demand=1 * GiB, want=2 * GiB, floor=256 * MiB, ceiling=4 * GiB, oom_floor=1 * GiB, need=3 * GiB // 2
)


@pytest.mark.parametrize(
    ("actual", "swap", "pressure", "expected"),
    [
        (2 * GiB, 0.0, False, None),  # at its want, not swapping: fine
        (2 * GiB, None, False, None),  # no rate yet: nothing to judge by
        (GiB + GiB // 4, 0.0, False, "below-need"),  # above the OOM floor, below the need
        (2 * GiB, 0.0, True, "pressure"),
        (2 * GiB, float(LINE), False, "swapping"),  # at the line counts
        (2 * GiB, LINE - 1.0, False, None),
        (GiB - MiB, float(LINE), True, "below-oom-floor"),  # the worst harm wins
    ],
)
def test_harm_is_the_worst_that_holds(
    actual: int, swap: float | None, pressure: bool, expected: str | None
) -> None:
    decision = DECISION._replace(pressure=pressure)
    assert harm_of(decision, actual, swap, LINE) == expected
    assert expected is None or expected in HARMS


def test_a_vm_the_decision_did_not_size_is_judged_by_its_swap_only() -> None:
    assert harm_of(None, GiB, 0.0, LINE) is None
    assert harm_of(GuestDecision(), GiB, 10.0 * LINE, LINE) == "swapping"


def test_the_api_names_the_suffering_during_a_burst() -> None:
    """fleet-burst: 24 guests jump by 2 GiB at 900 s on a host that cannot hold it. /metrics said
    host_short 1 while /api/v1/vms had no field for it and every guest read "managed"."""
    backend = SimBackend.open(f"sim://{SCENARIOS / 'fleet-burst.toml'}?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    history = History(TUNABLES.history_points)
    client = asgi_client(source, history=history)
    sampler = Sampler(history, lambda: source.view().snapshot, TUNABLES.sample_interval_s)
    while backend.clock.now() < 1000:
        controller.tick()
        source.on_tick(controller)
        sampler.sample_once()
        backend.clock.sleep(controller.config.interval_s)
    vms = client.get("/api/v1/vms").json()
    host = client.get("/api/v1/host").json()
    assert host["host_short"] is True
    assert host["reserve_spent_bytes"] == controller.status().reserve_spent_bytes  # carried from the plan
    suffering = {s["vm"]: s["harm"] for s in host["suffering"]}
    assert len(suffering) == len(vms) == 24
    for vm in vms:
        assert vm["status"] == "managed"
        assert vm["harm"] in HARMS and vm["harm"] == suffering[vm["name"]]
        assert vm["oom_floor_bytes"] <= vm["need_bytes"] <= vm["want_bytes"]
        assert vm["actual_bytes"] < vm["need_bytes"]
        assert vm["swap_in_bytes_per_s"] is not None and vm["demand_bytes"] > vm["actual_bytes"]
    one = client.get("/api/v1/vms/node-01").json()
    assert one["need_bytes"] == vms[0]["need_bytes"] and one["harm"] == vms[0]["harm"]


def test_a_quiet_host_has_no_harm() -> None:
    backend = SimBackend.open(f"sim://{SCENARIOS / 'fleet-burst.toml'}?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    client = asgi_client(source)
    while backend.clock.now() < 600:  # idle at 512 MiB, long before the burst
        controller.tick()
        source.on_tick(controller)
        backend.clock.sleep(controller.config.interval_s)
    host = client.get("/api/v1/host").json()
    assert host["host_short"] is False and host["suffering"] == []
    assert all(vm["harm"] is None for vm in client.get("/api/v1/vms").json())


def test_info_shows_the_daemons_figures_and_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """``info VM`` said one word of why; it now gives what the daemon managing the host judged the VM
    by: used, demand, need, want, OOM floor, floor, and the rule that bound its target."""
    import threading

    from autoballoon.reasons import RULES
    from autoballoon.server import serve
    from tests.cli_runner import run_cli

    uri = "sim:///demo?speed=100"
    backend = SimBackend.open(uri)
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    server = serve(source, "127.0.0.1:0")
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop,), kwargs={"on_tick": source.on_tick})
    thread.start()
    try:
        while controller.status(journal_entries=0).ticks < 3:
            stop.wait(0.05)
        code, out, err = run_cli(capsys, "--connect", uri, "info", "ci", "--daemon", server.url)
        assert code == 0, err
        assert "Decision (daemon)" in out and "need " in out and "want " in out and "OOM floor " in out
        assert "Bound by" in out
        code, out, err = run_cli(capsys, "--connect", uri, "info", "ci", "--json", "--daemon", server.url)
        import json

        detail = json.loads(out)
        assert detail["rule"] in RULES and detail["need_bytes"] <= detail["want_bytes"]
        rows = json.loads(run_cli(capsys, "--connect", uri, "list", "--json")[1])
        assert rows and "rule" not in rows[0]  # list --json keeps its fields; the daemon's are in info
    finally:
        stop.set()
        thread.join()
        server.stop()
