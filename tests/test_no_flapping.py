"""The "no flapping" property on every scenario and the demo: at most a small stated number of direction
changes of a managed guest's target per hour while its demand does not change (the simulator's own demand,
constant to the MiB between the two moves).

One cause found by this measure is fixed: stats on hand read against the balloon of the last tick rather
than the one they were taken with (the demo's Windows guest: 228 reversals an hour). A second is known and
not fixed: stats taken while an autodeflate guest's balloon moves between two looks are read against the
later balloon, 64-100 MiB off, and the next report's "jump" back raises the cushion (fleet-day's burst
guests 39 reversals an hour, kubevirt-node's CI runners 36, spikes' caches 48). Reading them against the
end that agrees with the last report brought those to 6, 6 and 15 but raised fleet-day's pressure from
3244 to 3470 VM-s: harm comes first, so that fix was taken back and the three stay strict xfails here."""

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
#: Known to flap at constant demand (see the module's docstring), with what was measured.
_MID_MOVE = "stats read against the balloon after a move they were taken during"
KNOWN = {
    "spikes.toml": f"{_MID_MOVE}: caches 48 reversals an hour",
    "fleet-day.toml": f"{_MID_MOVE}: burst guests 39 reversals an hour",
    "kubevirt-node.toml": f"{_MID_MOVE}: CI runners 36 reversals an hour",
}

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


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN[p.name], strict=True)) if p.name in KNOWN else p
        for p in SCENARIOS
    ],
    ids=[p.stem for p in SCENARIOS],
)
def test_no_guest_flaps_at_constant_demand(scenario: Path) -> None:
    flaps = reversals_at_constant_demand(f"sim://{scenario}?speed=max")
    worst = flaps.most_common(1)
    assert not worst or worst[0][1] / HOURS <= MAX_REVERSALS_PER_H, worst


def test_the_demo_does_not_flap_at_constant_demand() -> None:
    flaps = reversals_at_constant_demand("sim:///demo?speed=max")
    assert all(n / HOURS <= MAX_REVERSALS_PER_H for n in flaps.values()), flaps
