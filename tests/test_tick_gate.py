"""The one safety gate: a policy that breaks each rule has its plan stopped, and the controller and the
evaluation harness apply only gated plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from autoballoon.clock import VirtualClock
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.health import HealthState, Quarantine
from autoballoon.journal import Journal
from autoballoon.model import Action, GuestPolicy, HostSnapshot, Plan, VMState
from autoballoon.policy import DefaultPolicy, Inputs, create_policy, tick
from autoballoon.tunables import DEFAULT_TUNABLES
from autoballoon.units import GiB, MiB
from tests.helpers import make_guest, make_host
from tests.helpers.simhost import sim_backend

T = DEFAULT_TUNABLES


@dataclass(frozen=True)
class Rogue:
    """A policy that asks for whatever targets it is given, whatever the rules say."""

    asks: Mapping[str, int]
    name: str = "rogue"
    tunables: Any = T
    interval_s: float = 5.0
    quarantine: Mapping[str, str] = field(default_factory=dict)

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: HostSnapshot, inputs: Inputs, state: None) -> tuple[Plan, None]:
        by_name = {g.name: g for g in snapshot.guests}
        actions = tuple(
            Action(vm, by_name[vm].target_bytes if vm in by_name else 0, new, "rogue")
            for vm, new in self.asks.items()
        )
        return Plan(actions=actions), None


def _step(host: HostSnapshot, asks: Mapping[str, int], **kw: Any) -> tick.Tick:
    return tick.step(Rogue(asks), host, tick.TickState(), T, **kw)


def _targets(done: tick.Tick) -> dict[str, int]:
    return {a.vm: a.new_target for a in done.plan.actions}


def test_a_target_above_the_ceiling_or_below_the_floor_is_clamped() -> None:
    host = make_host(make_guest("a", max_bytes=4 * GiB, target=2 * GiB), make_guest("b", target=2 * GiB))
    done = _step(host, {"a": 8 * GiB, "b": 1 * MiB})
    assert _targets(done) == {"a": 4 * GiB, "b": T.global_min_bytes}
    assert {e.vm for e in done.plan.events if e.kind == "gate"} == {"a", "b"}


def test_the_floor_is_the_effective_policy_s_including_the_windows_floor() -> None:
    win = make_guest("w", max_bytes=8 * GiB, target=6 * GiB, os_type="windows")
    pinned = make_guest("p", target=3 * GiB)
    done = _step(make_host(win, pinned), {"w": 1 * GiB, "p": 1 * GiB},
                 policies={"p": GuestPolicy(min_bytes=2 * GiB)})  # fmt: skip
    assert _targets(done) == {"w": 2 * GiB, "p": 2 * GiB}


def test_no_shrink_without_fresh_stats_but_growth_passes() -> None:
    blind = make_guest("blind", target=2 * GiB, used=None)
    stale = make_guest("stale", target=2 * GiB, time=-3600.0)
    host = make_host(blind, stale)
    assert _targets(_step(host, {"blind": GiB, "stale": GiB})) == {}
    assert _targets(_step(host, {"blind": 3 * GiB})) == {"blind": 3 * GiB}


def test_a_held_or_excluded_vm_is_left_untouched() -> None:
    paused = make_guest("paused", target=2 * GiB, state=VMState.PAUSED)
    migrating = replace(make_guest("mig", target=2 * GiB), hold="migrating")
    excluded = make_guest("ex", target=2 * GiB, policy=GuestPolicy(exclude=True))
    no_balloon = make_guest("nb", target=2 * GiB, model="none")
    host = make_host(paused, migrating, excluded, no_balloon)
    done = _step(host, {"paused": 3 * GiB, "mig": 3 * GiB, "ex": GiB, "nb": GiB, "ghost": GiB})
    assert done.plan.actions == ()
    assert len([e for e in done.plan.events if e.kind == "gate"]) == 5


def test_a_quarantined_vm_is_never_inflated_but_may_be_given_memory() -> None:
    sick = make_guest("sick", target=2 * GiB)
    health = HealthState(quarantined={"sick": Quarantine(0.0, None, "cpu storm")})
    host = make_host(sick)

    state = tick.TickState(None, health)
    shrink = tick.step(Rogue({"sick": GiB}), host, state, T)
    grow = tick.step(Rogue({"sick": 4 * GiB}), host, state, T)
    # The health guard observed the snapshot, so take the quarantine from the state it returned.
    assert "sick" in shrink.state.health.quarantined
    assert _targets(shrink) == {}
    assert _targets(grow) == {"sick": 4 * GiB}


def test_an_old_target_that_is_not_the_vm_s_is_corrected() -> None:
    host = make_host(make_guest("a", target=2 * GiB))
    plan = Plan(actions=(Action("a", 3 * GiB, GiB + 512 * MiB, "x"),))
    gated = tick.gate(plan, host, Inputs(), T, "p")
    assert gated.actions == (Action("a", 2 * GiB, GiB + 512 * MiB, "x"),)


def test_a_safe_plan_passes_unchanged() -> None:
    host = make_host(make_guest("a", target=2 * GiB, used=GiB))
    plan = Plan(actions=(Action("a", 2 * GiB, 3 * GiB, "demand"),))
    assert tick.gate(plan, host, Inputs(), T, "p") is plan


@pytest.mark.parametrize("name", ["autoballoon", "mom", "proxmox", "static"])
def test_every_daemon_policy_ticks_through_the_gate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_gate = tick.gate

    def spy(plan: Plan, *args: Any, **kw: Any) -> Plan:
        seen.append(args[-1] if len(args) > 3 else kw.get("policy", ""))
        return real_gate(plan, *args, **kw)

    monkeypatch.setattr(tick, "gate", spy)
    policy = create_policy(name, T)
    host = make_host(make_guest("a", target=4 * GiB, used=GiB))
    tick.step(policy, host, tick.start(policy), T)
    assert seen == [name]


def test_the_default_policy_s_plans_need_no_correction() -> None:
    """The default policy already obeys the rules; the gate must not change what it decides."""
    policy = DefaultPolicy(T)
    state = tick.start(policy)
    for i in range(30):
        host = make_host(
            make_guest("a", target=4 * GiB, used=GiB + i * 50 * MiB, time=float(i * 5)),
            make_guest("b", target=4 * GiB, used=None, time=float(i * 5)),
            time=float(i * 5),
        )
        done = tick.step(policy, host, state, T)
        state = replace(state, policy=done.state.policy, health=done.state.health)
        assert not [e for e in done.plan.events if e.kind == "gate"]


def test_the_controller_applies_only_the_gated_plan() -> None:
    backend = sim_backend()
    config = DaemonConfig()
    controller = Controller(backend, VirtualClock(), config, Journal(None),
                            policy=Rogue({"idle": MiB, "busy": 64 * GiB, "quiet": MiB}))  # fmt: skip
    before = {g.name: g.target_bytes for g in backend.snapshot().guests}
    plan = controller.tick()
    assert plan is not None
    after = {g.name: g.target_bytes for g in backend.snapshot().guests}
    floor = config.tunables.global_min_bytes
    assert after["idle"] == floor  # clamped to the floor, not 1 MiB
    assert after["busy"] == 4 * GiB  # its max
    assert after["quiet"] == before["quiet"]  # no stats: never shrunk
    assert {e.vm for e in plan.events if e.kind == "gate"} == {"idle", "busy", "quiet"}
