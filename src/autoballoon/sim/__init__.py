"""The built-in simulated KVM host: scenarios (TOML), demand shapes, and the vectorised engine.

``Simulation(load_scenario(path), seed=0)`` is the whole public surface the evaluation harness and the
``sim://`` backend need; ``docs/scenarios.md`` documents the file format and the guest model.
"""

from autoballoon.sim.engine import Simulation
from autoballoon.sim.physics import DEFAULT_PHYSICS, Physics
from autoballoon.sim.scenario import GuestSpec, HostSpec, RunSpec, Scenario, load_scenario, loads_scenario

__all__ = [
    "DEFAULT_PHYSICS",
    "GuestSpec",
    "HostSpec",
    "Physics",
    "RunSpec",
    "Scenario",
    "Simulation",
    "load_scenario",
    "loads_scenario",
]
