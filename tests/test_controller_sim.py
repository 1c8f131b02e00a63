"""The daemon end to end on the simulator, on a virtual clock (seconds of real time for hours of life).

Scenarios are inline (format: docs/scenarios.md). Every test also checks that no guest was OOM-killed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig, parse_config
from autoballoon.controller import Controller, ControllerStatus
from autoballoon.journal import Journal
from autoballoon.model import Status
from autoballoon.sim import Simulation
from autoballoon.sim.scenario import loads_scenario
from autoballoon.units import GiB, MiB

HOST = """
[host]
ram = "{ram}"
reserve = "512M"
base_used = "512M"
[run]
duration = 86400
step = 1
"""


def open_sim(guests: str, *, ram: str = "32G", warmup: float = 30.0) -> SimBackend:
    sim = Simulation(loads_scenario(HOST.format(ram=ram) + guests, source="<test>"))
    sim.run(warmup)
    return SimBackend(sim, uri="sim:///test")


def run_daemon(
    backend: SimBackend,
    seconds: float,
    config: DaemonConfig | None = None,
    on_tick: Callable[[Controller], None] | None = None,
) -> Controller:
    config = config or DaemonConfig()
    controller = Controller(backend, backend.clock, config, Journal(None))
    controller.run(threading.Event(), max_ticks=int(seconds / config.interval_s), on_tick=on_tick)
    return controller


def assert_no_oom(backend: SimBackend) -> None:
    kills = dict(zip(backend.sim.names, backend.sim.oom_kills.tolist(), strict=True))
    assert not any(kills.values()), kills


def by_name(status: ControllerStatus) -> dict[str, object]:
    return {vm.name: vm for vm in status.vms}


IDLE_FLEET = """
[[guest]]
name = "idle"
count = 3
max = "4G"
target = "4G"
kernel = "100M"
demand = { shape = "constant", level = "600M" }
"""


def test_idle_guests_converge_to_need_plus_cushion() -> None:
    """Idle guests give back all but their need (demand plus headroom) and a cushion for one reaction
    time of growth or a first burst, whichever is larger: here the burst prior, a quarter of 4 GiB."""
    backend = open_sim(IDLE_FLEET)
    controller = run_daemon(backend, 900)
    sim = backend.sim
    t = controller.config.tunables
    for i, vm in enumerate(controller.status().vms):
        assert vm.status == Status.MANAGED
        used = int(sim.demand[i]) + int(sim.kernel[i])
        latency = t.interval_s + sim.balloons[i].stats_period + t.actuation_s  # type: ignore[operator]
        cushion = max(int(4 * GiB * t.jump_prior_fraction), int(t.growth_allowance_bytes_per_s * latency))
        ideal = used + t.min_headroom_bytes + cushion
        assert vm.target_bytes < 4 * GiB * 0.6, vm  # gave a good part back
        assert ideal * 0.95 <= vm.target_bytes <= ideal * 1.1 + t.shrink_dead_band_bytes, (vm, ideal)
    assert not sim.under_pressure.any()
    assert_no_oom(backend)


def test_demand_step_is_covered_within_two_ticks() -> None:
    backend = open_sim(
        """
[[guest]]
name = "app"
max = "4G"
target = "4G"
kernel = "100M"
demand = { shape = "steps", points = [[0, "600M"], [400, "1400M"]] }
"""
    )
    sim = backend.sim
    covered_at: list[float] = []
    step_at = 400.0

    def on_tick(c: Controller) -> None:
        if sim.time > step_at and not covered_at and sim.actual[0] >= sim.demand[0] + sim.kernel[0]:
            covered_at.append(sim.time)

    controller = run_daemon(backend, 600, on_tick=on_tick)
    assert covered_at, "the step was never covered"
    interval = controller.config.interval_s
    assert covered_at[0] - step_at <= 2 * interval + 1e-6
    assert "grow" in controller.status().actions_by_direction
    assert_no_oom(backend)


def test_overcommitted_host_is_balanced_by_shares() -> None:
    # The host holds both guests' needs but not their cushions: what is left above the needs is split
    # 3:1 by shares (a water-fill: neither gets more than its want).
    backend = open_sim(
        """
[[guest]]
name = "gold"
max = "8G"
target = "4G"
swap = "0"
kernel = "100M"
demand = { shape = "constant", level = "2G" }
policy = { shares = 3000 }

[[guest]]
name = "bronze"
max = "8G"
target = "4G"
swap = "0"
kernel = "100M"
demand = { shape = "constant", level = "2G" }
policy = { shares = 1000 }
""",
        ram="6656M",
    )
    controller = run_daemon(backend, 300)
    status = controller.status()
    vms = by_name(status)
    gold = vms["gold"]
    assert status.host_short
    headroom = controller.config.tunables.min_headroom_bytes
    need = {n: vm.demand_bytes + headroom for n, vm in vms.items()}  # type: ignore[attr-defined]
    above = {n: vms[n].target_bytes - need[n] for n in ("gold", "bronze")}  # type: ignore[attr-defined]
    assert gold.target_bytes < gold.want_bytes  # type: ignore[attr-defined]
    ratio = above["gold"] / above["bronze"]
    assert 2.5 <= ratio <= 3.5, (ratio, above)
    assert_no_oom(backend)


def test_stuck_guest_is_reported_and_the_others_absorb_its_share() -> None:
    backend = open_sim(
        """
[[guest]]
name = "wedged"
max = "4G"
target = "4G"
stuck = true
demand = { shape = "constant", level = "500M" }

[[guest]]
name = "busy"
max = "6G"
target = "2G"
kernel = "100M"
swap = "2G"
demand = { shape = "constant", level = "3G" }
""",
    )
    config = parse_config({"host": {"budget": "8GiB"}})
    controller = run_daemon(backend, 300, config)
    status = controller.status()
    vms = by_name(status)
    wedged, busy = vms["wedged"], vms["busy"]
    assert wedged.status == Status.STUCK  # type: ignore[attr-defined]
    assert "did not" in wedged.reason  # type: ignore[attr-defined]
    # Its balloon still holds 4 GiB: the budget left for the others is 4 GiB, and busy gets it.
    assert wedged.actual_bytes == 4 * GiB  # type: ignore[attr-defined]
    assert busy.target_bytes + 4 * GiB <= 8 * GiB  # type: ignore[attr-defined]
    assert busy.target_bytes >= 3 * GiB + 100 * MiB  # type: ignore[attr-defined]
    assert any(e["kind"] == "status" and "stuck" in e["message"] for e in status.journal)
    assert_no_oom(backend)


def test_stats_less_guest_is_never_shrunk() -> None:
    backend = open_sim(
        """
[[guest]]
name = "legacy"
max = "4G"
target = "3G"
stats = false
demand = { shape = "constant", level = "1G" }

[[guest]]
name = "normal"
max = "4G"
target = "4G"
demand = { shape = "constant", level = "1G" }
"""
    )
    sim = backend.sim
    targets: list[int] = []
    controller = run_daemon(backend, 300, on_tick=lambda c: targets.append(int(sim.target[0])))
    assert set(targets) == {3 * GiB}
    vms = by_name(controller.status())
    assert vms["legacy"].status == Status.NO_STATS  # type: ignore[attr-defined]
    assert vms["normal"].target_bytes < 3 * GiB  # type: ignore[attr-defined]
    assert_no_oom(backend)


def test_autodeflate_burst_is_adopted_without_oom() -> None:
    backend = open_sim(
        """
[[guest]]
name = "bursty"
max = "2G"
target = "2G"
autodeflate = true
swap = "0"
kernel = "100M"
demand = { shape = "steps", points = [[0, "200M"], [300, "1200M"]] }
"""
    )
    sim = backend.sim
    controller = run_daemon(backend, 400)
    reasons = controller.status().actions_by_reason
    assert sim.target[0] >= sim.demand[0] + sim.kernel[0]
    assert reasons.get("autodeflate", 0) + reasons.get("pressure", 0) + reasons.get("demand", 0) >= 1
    assert_no_oom(backend)


def test_demo_scenario_runs_an_hour_without_harm_to_well_behaved_guests() -> None:
    backend = SimBackend.open("sim:///demo?speed=max")
    controller = run_daemon(backend, 3600)
    status = controller.status()
    sim = backend.sim
    names = list(sim.names)
    kills = dict(zip(names, sim.oom_kills.tolist(), strict=True))
    for name in ("web", "db", "win10", "legacy", "stuck"):
        assert kills[name] == 0, kills
    assert float(np.sum(sim.max - sim.actual)) > 8 * GiB  # memory went back to the host
    vms = by_name(status)
    assert vms["legacy"].status == Status.NO_STATS  # type: ignore[attr-defined]
    assert vms["stuck"].status == Status.STUCK  # type: ignore[attr-defined]
