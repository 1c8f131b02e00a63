"""The reserve before the floor, switched off on the public scenario it is needed on (the style of
``tests/test_ablation.py``: the scenario runs through the evaluation harness once as it is, where the
check passes, and once without the rule, where the same check fails).

When the guests' OOM floors no longer fit the host's budget, the allocation spends the host's reserve,
down to its hard minimum, before any guest goes below its OOM floor (:func:`.allocate.goals`,
:func:`.allocate.pay_growth`, both given ``hard_pool``). ``scenarios/oversubscribed-burst.toml`` is sized
so that its floors land between the budget and all the host has above its hard minimum (its header
has the sums); without the rule its guests are OOM-killed.

The refault rule (:mod:`.refault`) has no ablation here: the simulator gives it no signal to judge.
A simulated guest's page cache is a number that grows into free memory and is dropped at no cost
whenever memory is needed (``Simulation._settle_after_move``); nothing ever reads it back, so a balloon
shrinking into it causes no fault. Its major-fault counter is its swap-ins in pages, and a voluntary
shrink stops at the guest's want, above where it would swap; the simulated backend reports no disk
reads. A guest shrunk into a large cache shows 0 major faults whether the rule paces and steps back the
shrink or not (only the pace of reclaim differs), so a check on faults or pressure could not fail. The
rule is tested on hand-made guests whose faults follow the balloon (``tests/test_refault.py``). An
ablation would need the simulator to model a hot part of a guest's cache (a scenario field): pages of
it the balloon takes are read back at the workload's pace, as major faults (mapped files) or as disk
reads on the guest's snapshot (read() calls), and refill the cache as they are read; and a measure of
that harm in the metrics (pages re-read, or seconds slowed), which rank only kills, overrun and swap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoballoon.evaluate import runner
from autoballoon.evaluate.metrics import Metrics
from autoballoon.evaluate.policies import DaemonPolicy
from autoballoon.evaluate.runner import Job, run_simulation
from autoballoon.model import HostSnapshot, Plan
from autoballoon.policy import DefaultPolicy
from autoballoon.policy.default import allocate
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import load_scenario
from autoballoon.tunables import DEFAULT_TUNABLES, Tunables

BURST = Path(__file__).resolve().parents[1] / "scenarios" / "oversubscribed-burst.toml"


@dataclass(frozen=True, slots=True)
class Run:
    metrics: Metrics
    plans: list[Plan]
    least_available: int  # the host's lowest MemAvailable, sampled at every simulation step
    hard_minimum: int  # the policy's hard minimum on this host (:func:`.allocate.host_min_free`)


def run_burst(t: Tunables = DEFAULT_TUNABLES) -> Run:
    """The default policy over the scenario through the evaluation harness, keeping every plan."""
    plans: list[Plan] = []
    first: list[HostSnapshot] = []

    class Recording(DaemonPolicy):
        def plan(self, snapshot: HostSnapshot) -> Plan:
            plans.append(super().plan(snapshot))
            if not first:
                first.append(snapshot)
            return plans[-1]

    def make(sim: Simulation) -> DaemonPolicy:
        return Recording(DefaultPolicy(t))

    scenario = load_scenario(BURST)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(runner, "PLOT_POINTS", scenario.run.steps)  # the trace keeps every step's host memory
        result = run_simulation(scenario, Job(str(BURST), "autoballoon"), make)
    snap = first[0]
    hard = allocate.host_min_free(snap, allocate.host_reserve(snap, t), t)
    return Run(result.metrics, plans, int(result.trace.host_available.min()), hard)


@pytest.fixture(scope="module")
def as_is() -> Iterator[Run]:
    yield run_burst()


def test_the_scenario_puts_the_floors_between_the_budget_and_the_hard_minimum(as_is: Run) -> None:
    """What the scenario's header says of its sizes holds, so that the rule is what it exercises: at
    the burst's height the OOM floors and the needs exceed the budget, and the floors fit within the
    budget and the part of the reserve above the hard minimum."""
    height = max(as_is.plans, key=lambda p: sum(d.oom_floor or 0 for d in p.guests.values()))
    floors = sum(d.oom_floor or 0 for d in height.guests.values())
    needs = sum(d.need or 0 for d in height.guests.values())
    assert height.budget is not None and height.reserve is not None
    spendable = height.reserve - as_is.hard_minimum
    print(f"floors {floors}, needs {needs}, budget {height.budget}, spendable reserve {spendable}")
    assert height.budget < floors <= height.budget + spendable
    assert needs > height.budget


def test_the_burst_spends_the_reserve_and_kills_nobody(as_is: Run) -> None:
    spent = [p for p in as_is.plans if p.reserve_spent > 0]
    events = [e for p in as_is.plans for e in p.events if e.kind == "host-reserve-spent"]
    print(f"{len(spent)} plans spent up to {max(p.reserve_spent for p in spent)} B of the reserve")
    assert as_is.metrics.oom_kills == 0
    assert spent and events and events[0].fields["spending"] is True
    assert as_is.least_available >= as_is.hard_minimum
    # The metrics count an overrun below the scenario's reserve, the host's real limit, which is below
    # the policy's hard minimum here: spending the policy's own reserve is not an overrun.
    assert as_is.metrics.host_overrun_s == 0


def test_without_the_reserve_before_the_floor_the_burst_kills(
    as_is: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def whole_reserve(snapshot: HostSnapshot, reserve: int, t: Tunables) -> int:
        """The hard minimum is the whole reserve: no OOM floor may take any of it."""
        return reserve

    monkeypatch.setattr(allocate, "host_min_free", whole_reserve)
    ablated = run_burst()
    print(f"OOM kills: {as_is.metrics.oom_kills} with the rule, {ablated.metrics.oom_kills} without")
    assert not any(p.reserve_spent for p in ablated.plans)
    assert as_is.metrics.oom_kills == 0
    assert ablated.metrics.oom_kills > 0
