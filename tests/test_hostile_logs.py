"""Names that try to drive the terminal, where they reach the daemon's log and ``/metrics``: a guest named
to clear the screen and retitle the window is quarantined, its remedy applied, then released, and every
log line and label value shows its escapes rather than obeying them."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import generate_latest

from autoballoon.backends.sim import SimBackend
from autoballoon.config import parse_config
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.metrics import make_registry
from autoballoon.server.tunables import TUNABLES
from autoballoon.sim import Simulation
from autoballoon.sim.scenario import loads_scenario

#: Clears the screen (CSI 2J) and sets the window title (OSC 0 ... BEL).
EVIL = "s\x1b[2J\x1b]0;hack\x07"
SCENARIO = r"""
[host]
ram = "32G"
reserve = "512M"
base_used = "512M"
cpus = 8
[run]
duration = 86400
step = 1

[[guest]]
name = "s\u001b[2J\u001b]0;hack\u0007"
max = "4G"
vcpus = 2
os = "windows"
cpu_storm = true
stats_period = 2
policy = { min = "512M" }
demand = { shape = "constant", level = "1G" }
"""
#: Characters that act on a terminal and must never reach one raw.
_ACTING = ("\x1b", "\x07", "\x9b")


def _quarantined_controller() -> tuple[SimBackend, Controller]:
    sim = Simulation(loads_scenario(SCENARIO, source="<test>"))
    sim.run(30.0)
    backend = SimBackend(sim, uri="sim:///hostile")
    config = parse_config(
        {"health": {"sustain_s": 10, "window_s": 60, "quarantine_s": 0, "disable_balloon": True}}
    )
    controller = Controller(backend, backend.clock, config, Journal(None, ring_size=10_000))
    for _ in range(int(120 / config.interval_s)):
        controller.tick()
        if EVIL in controller.quarantined:
            break
        backend.clock.sleep(config.interval_s)
    assert EVIL in controller.quarantined
    return backend, controller


def test_log_lines_escape_a_hostile_vm_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autoballoon"):
        backend, controller = _quarantined_controller()
        controller.submit_release(EVIL)
        backend.clock.sleep(controller.config.interval_s)
        controller.tick()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("autoballoon")]
    said = " | ".join(lines)
    for needle in ("quarantine", "persistent config", "released"):  # the guard, the remedy, the release
        assert needle in said, said
    assert all(not any(c in line for c in _ACTING) for line in lines), [repr(x) for x in lines]
    assert "s\\x1b[2J\\x1b]0;hack\\x07" in said


def test_metrics_label_values_escape_a_hostile_vm_name() -> None:
    _backend, controller = _quarantined_controller()
    source = ControllerSource(controller, TUNABLES)
    text = generate_latest(make_registry(source.view, tick_histogram=source.tick_histogram)).decode()
    assert not any(c in text for c in _ACTING)
    assert 'vm="s\\\\x1b[2J\\\\x1b]0;hack\\\\x07"' in text  # printable's escape, then the format's
