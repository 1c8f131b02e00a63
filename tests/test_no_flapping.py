"""The "no flapping" property on every scenario and the demo: at most a small stated number of direction
changes of a managed guest's target per hour while its demand does not change (the simulator's own demand,
constant to the MiB between the two moves).

Two causes found by this measure are fixed. Stats on hand were read against the balloon of the last
tick rather than the one they were taken with (the demo's Windows guest: 228 reversals an hour). And
stats taken while a shrink of an autodeflate guest moved its balloon, read against the later balloon,
under-read its use by the shrink, so the next report seemed to rise by as much and grew the guest back
(fleet-day's burst guests 37 reversals an hour, kubevirt-node's CI runners 31, spikes' caches 48): such a
reading now carries its doubt, the next rise is measured from the top of it, and no shrink is taken on
it (see ``estimate._used``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.units import MiB

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))
HOURS = 1.0
#: Reversals an hour at constant demand one managed guest may make (most make 0-2; the host-short
#: scenarios' guests up to 6 as the budget shifts under them).
MAX_REVERSALS_PER_H = 6
#: Demand that moved less than this between two moves did not change.
STILL = MiB

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def reversals_at_constant_demand(uri: str) -> Counter[str]:
    backend = SimBackend.open(uri)
    sim = backend.sim
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    last: dict[str, str] = {}
    low: dict[str, int] = {}
    high: dict[str, int] = {}
    flaps: Counter[str] = Counter()
    while backend.clock.now() < HOURS * 3600:
        plan = controller.tick()
        assert plan is not None
        for i, name in enumerate(sim.names):
            d = int(sim.demand[i])
            low[name], high[name] = min(low.get(name, d), d), max(high.get(name, d), d)
        for a in plan.actions:
            if a.direction == "none" or plan.status.get(a.vm) != "managed":
                continue
            if last.get(a.vm, a.direction) != a.direction and high[a.vm] - low[a.vm] < STILL:
                flaps[a.vm] += 1
            last[a.vm] = a.direction
            low[a.vm] = high[a.vm] = int(sim.demand[sim.index(a.vm)])
        backend.clock.sleep(controller.config.interval_s)
    return flaps


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_no_guest_flaps_at_constant_demand(scenario: Path) -> None:
    flaps = reversals_at_constant_demand(f"sim://{scenario}?speed=max")
    worst = flaps.most_common(1)
    print(f"{scenario.stem}: most reversals an hour {worst}")
    assert not worst or worst[0][1] / HOURS <= MAX_REVERSALS_PER_H, worst


def test_the_demo_does_not_flap_at_constant_demand() -> None:
    flaps = reversals_at_constant_demand("sim:///demo?speed=max")
    assert all(n / HOURS <= MAX_REVERSALS_PER_H for n in flaps.values()), flaps
