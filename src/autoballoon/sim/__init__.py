"""The built-in simulated KVM host: scenarios (TOML), demand shapes, and the vectorised engine.

``Simulation(load_scenario(path), seed=0)`` is the whole public surface the evaluation harness and the
``sim://`` backend need; ``docs/scenarios.md`` documents the file format and the guest model.
"""

from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import GuestSpec, HostSpec, RunSpec, Scenario, load_scenario, loads_scenario
from autoballoon.sim.tunables import DEFAULT_TUNABLES, Tunables

__all__ = [
    "DEFAULT_TUNABLES",
    "GuestSpec",
    "HostSpec",
    "RunSpec",
    "Scenario",
    "Simulation",
    "Tunables",
    "load_scenario",
    "loads_scenario",
]
