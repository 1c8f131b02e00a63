"""A small simulated host for tests that need a running backend, not a particular scenario."""

from __future__ import annotations

from autoballoon.backends.sim import SimBackend
from autoballoon.sim import Simulation
from autoballoon.sim.scenario import loads_scenario

HOST = """
[host]
ram = "{ram}"
reserve = "256M"
base_used = "256M"
[run]
duration = 3600
step = 1
"""
#: Guests that give a controller something to do: an idle one to shrink, a growing one, one without stats.
MIXED_GUESTS = """
[[guest]]
name = "idle"
max = "2G"
target = "2G"
demand = { shape = "constant", level = "300M" }
[[guest]]
name = "busy"
max = "4G"
target = "1G"
autodeflate = true
demand = { shape = "ramp", from = "200M", to = "3G", start = 5, length = 20 }
[[guest]]
name = "quiet"
max = "2G"
target = "1G"
stats = false
demand = { shape = "constant", level = "500M" }
"""


def sim_backend(guests: str = MIXED_GUESTS, *, ram: str = "8G", warmup: float = 10.0) -> SimBackend:
    """A simulated host with ``guests`` (``[[guest]]`` tables, docs/scenarios.md), ``warmup`` seconds in."""
    sim = Simulation(loads_scenario(HOST.format(ram=ram) + guests, source="<test>"))
    sim.run(warmup)
    return SimBackend(sim, uri="sim:///test")
