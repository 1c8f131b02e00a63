"""What survives a restart: quarantines, manual holds and the learned history are saved and recalled, on
a new monotonic clock, by a daemon that starts where the last one stopped (``kill -9`` included)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from autoballoon import saved
from autoballoon.backends.sim import SimBackend
from autoballoon.config import parse_config
from autoballoon.controller import Controller
from autoballoon.health import HealthState, Quarantine
from autoballoon.journal import Journal
from autoballoon.model import Status
from autoballoon.policy import GuestRecord, PolicyState
from autoballoon.policy.default.refault import Probe
from autoballoon.sim import Simulation
from autoballoon.sim.scenario import loads_scenario
from autoballoon.state import StateStore
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

T = Tunables()


def test_times_move_to_the_new_clock_and_the_history_fades_over_the_downtime() -> None:
    health = HealthState(quarantined=MappingProxyType({"win": Quarantine(90.0, 400.0, "CPU storm")}))
    kept = Probe(start=3 * GiB, taken=64 * MiB, keep=2 * GiB, keep_until=1000.0)
    record = GuestRecord(
        seen_time=100.0, manual_until=250.0, jump=2 * GiB, rate=8 * MiB, reserved=30 * MiB, probe=kept
    )
    policy = PolicyState(guests=MappingProxyType({"db": record}))
    # saved at monotonic 100 = wall 10,000; recalled an hour later on a clock that restarted at 5
    document = saved.remember("autoballoon", health, policy, now=100.0, wall=10_000.0)
    again = saved.Saved.model_validate_json(document.model_dump_json())  # through the file's JSON
    hour = 3600.0
    h = saved.recall_health(again, HealthState(), now=5.0, wall=10_000.0 + hour)
    assert "win" not in h.quarantined  # it ended (wall 10,300) while the daemon was down
    q_long = HealthState(quarantined=MappingProxyType({"win": Quarantine(90.0, None, "CPU storm")}))
    h = saved.recall_health(
        saved.remember("autoballoon", q_long, policy, 100.0, 10_000.0), HealthState(), 5.0, 10_100.0
    )
    assert h.quarantined["win"] == Quarantine(since=-105.0, until=None, reason="CPU storm")  # wall 9,990
    p = saved.recall_policy(again, "autoballoon", PolicyState(), now=5.0, wall=10_100.0, t=T)
    assert isinstance(p, PolicyState)
    db = p.guests["db"]
    assert db.manual_until == pytest.approx(5.0 + 50.0)  # 150 s of hold were left at the save, 100 s passed
    assert db.jump == int(2 * GiB * 0.5 ** (100.0 / T.jump_half_life_s))
    assert db.reserved == 30 * MiB
    # The size a shrink into its cache was stepped back to is kept for what was left of its time (900 s
    # at the save, 100 s passed); the probe that was open is not (its faults are the guest's by now).
    assert db.probe == Probe(keep=2 * GiB, keep_until=pytest.approx(5.0 + 800.0))
    later = saved.recall_policy(again, "autoballoon", PolicyState(), now=5.0, wall=10_000.0 + hour, t=T)
    assert isinstance(later, PolicyState) and later.guests["db"].manual_until is None  # the hold ended
    assert later.guests["db"].probe == Probe()  # and so did the kept size
    other = saved.recall_policy(again, "mom", None, now=5.0, wall=10_100.0, t=T)
    assert other is None  # another policy's state is left as it is


SCENARIO = """
[host]
ram = "32G"
reserve = "512M"
base_used = "512M"
cpus = 8
[run]
duration = 86400
[[guest]]
name = "storm"
max = "4G"
vcpus = 2
cpu_storm = true
stats_period = 2
policy = { min = "512M" }
demand = { shape = "constant", level = "1G" }
[[guest]]
name = "calm"
max = "4G"
stats_period = 2
demand = { shape = "constant", level = "1G" }
"""


def daemon(backend: SimBackend, path: Path) -> Controller:
    config = parse_config({"health": {"sustain_s": 10, "window_s": 60, "quarantine_s": 0}})
    return Controller(backend, backend.clock, config, Journal(None), store=StateStore(path))


def run(controller: Controller, backend: SimBackend, seconds: float) -> None:
    for _ in range(int(seconds / controller.config.interval_s)):
        controller.tick()
        backend.clock.sleep(controller.config.interval_s)


def test_a_restarted_daemon_keeps_a_quarantine_without_a_new_storm(tmp_path: Path) -> None:
    sim = Simulation(loads_scenario(SCENARIO, source="<test>"))
    sim.run(30.0)
    backend = SimBackend(sim, uri="sim:///saved-test")
    first = daemon(backend, tmp_path / "state.json")
    run(first, backend, 300)
    assert "storm" in first.quarantined
    # kill -9: nothing runs on exit; a new daemon starts on the same host with the same state file
    second = daemon(backend, tmp_path / "state.json")
    assert "storm" in second.quarantined
    run(second, backend, 120)
    vms = {vm.name: vm for vm in second.status().vms}
    assert vms["storm"].status == Status.QUARANTINED and vms["storm"].target_bytes == 4 * GiB
    kinds = [e["kind"] for e in second.journal.recent()]
    assert kinds.count("recalled") == 1 and "quarantine" not in kinds  # no storm to detect again
    storm_shrinks = [
        e for e in second.journal.recent() if e.get("vm") == "storm" and e.get("direction") == "shrink"
    ]
    assert storm_shrinks == []


def test_what_the_document_cannot_hold_is_left_out_or_cut_instead_of_failing_every_save() -> None:
    """A VM name longer than the document allows (QMP's glob mode takes any ``-name``), a quarantine
    reason that quotes it twice, an infinite rate: each made every save raise, and the daemon with it."""
    long = "v" * 2000
    health = HealthState(quarantined=MappingProxyType({
        long: Quarantine(1.0, None, f"{long}: CPU storm; {long}"),
        "win": Quarantine(1.0, None, "x" * 5000),
    }))  # fmt: skip
    records = {long: GuestRecord(seen_time=1.0), "db": GuestRecord(seen_time=1.0, rate=float("inf"))}
    document = saved.remember("autoballoon", health, PolicyState(guests=MappingProxyType(records)), 2.0, 10.0)
    assert set(document.quarantines) == {"win"} and len(document.quarantines["win"].reason) == 4096
    assert set(document.guests) == {"db"} and document.guests["db"].rate == 0.0
