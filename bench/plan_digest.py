"""A digest of every plan every daemon policy makes on every scenario in the simulator.

Run it on two trees, before and after a change that should not change what the policies decide (a
restructuring), and compare the lines: equal digests mean equal targets at every tick of every run.

Run: ``.venv/bin/python bench/plan_digest.py [--scenarios DIR] [--policies a,b]``.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from autoballoon.evaluate.policies import DaemonPolicy, Targets
from autoballoon.evaluate.runner import Job, find_scenarios, run_simulation
from autoballoon.model import HostSnapshot
from autoballoon.policy import POLICIES, create_policy
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import load_scenario
from autoballoon.tunables import DEFAULT_TUNABLES


class Digesting(DaemonPolicy):
    """The daemon policy as the harness runs it, hashing the targets of every tick."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.hash = hashlib.sha256()
        self.ticks = 0

    def tick(self, now: float, snapshot: HostSnapshot | None) -> Targets:
        targets = super().tick(now, snapshot)
        self.hash.update(repr((round(now, 6), sorted(dict(targets).items()))).encode())
        self.ticks += 1
        return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default="scenarios")
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    for path in find_scenarios([args.scenarios]):
        scenario = load_scenario(path)
        for name in args.policies.split(","):
            made: list[Digesting] = []

            def make(sim: Simulation, name: str = name, made: list[Digesting] = made) -> Digesting:
                made.append(Digesting(create_policy(name, DEFAULT_TUNABLES)))
                return made[-1]

            run_simulation(scenario, Job(str(path), name), make)
            print(f"{path.stem} {name} {made[0].ticks} {made[0].hash.hexdigest()[:16]}", flush=True)


if __name__ == "__main__":
    main()
