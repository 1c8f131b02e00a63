"""The controller loop against a scripted backend: acting, dry run, reconnects, VMs coming and going,
manual changes from another thread, on_exit, status and journal."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from autoballoon.clock import VirtualClock
from autoballoon.config import DaemonConfig, parse_config
from autoballoon.controller import Controller
from autoballoon.errors import ConnectionLostError, LimitError, UnknownVMError
from autoballoon.journal import Journal, read_journal
from autoballoon.model import BalloonChange, ChangeResult, GuestPolicy, GuestSnapshot, HostSnapshot, Status
from autoballoon.units import GiB, MiB
from tests.helpers import make_guest


class FakeBackend:
    """VMs whose balloons obey at once; failures are scripted by the tests."""

    def __init__(self, clock: VirtualClock, *guests: GuestSnapshot, uri: str = "fake:///") -> None:
        self.uri = uri
        self.clock = clock
        self.guests = {g.name: g for g in guests}
        self.used = {g.name: 500 * MiB for g in guests}
        self.fail_snapshots = 0
        self.vanish_on_set: set[str] = set()
        self.calls: list[tuple[str, int]] = []
        self.policies: dict[str, GuestPolicy] = {}
        self.closed = False

    def snapshot(self) -> HostSnapshot:
        if self.fail_snapshots:
            self.fail_snapshots -= 1
            raise ConnectionLostError("libvirt connection dropped")
        now = self.clock.now()
        guests = tuple(
            make_guest(
                g.name,
                max_bytes=g.max_bytes,
                target=g.target_bytes,
                actual=g.target_bytes,
                used=self.used[g.name],
                time=now,
                policy=self.policies.get(g.name, g.policy),
            )
            for g in self.guests.values()
        )
        return HostSnapshot(
            time=now, wall_time=1000.0 + now, mem_total=64 * GiB, mem_available=32 * GiB, guests=guests
        )

    def guest(self, vm: str) -> GuestSnapshot:
        return self.guests[vm]

    def set_target(self, vm: str, target_bytes: int, *, live: bool = True, config: bool = False) -> None:
        if vm in self.vanish_on_set or vm not in self.guests:
            self.guests.pop(vm, None)
            raise UnknownVMError(vm)
        self.calls.append((vm, target_bytes))
        self.guests[vm] = replace(self.guests[vm], target_bytes=target_bytes, actual_bytes=target_bytes)

    def set_max(self, vm: str, max_bytes: int) -> ChangeResult:
        raise NotImplementedError

    def set_vcpus(self, vm: str, count: int, *, live: bool = True, config: bool = False) -> ChangeResult:
        raise NotImplementedError

    def set_balloon(self, vm: str, change: BalloonChange) -> ChangeResult:
        raise NotImplementedError

    def get_policy(self, vm: str) -> GuestPolicy:
        return self.policies.get(vm, GuestPolicy())

    def set_policy(self, vm: str, policy: GuestPolicy) -> None:
        self.policies[vm] = policy

    def close(self) -> None:
        self.closed = True


def setup(*guests: GuestSnapshot, config: DaemonConfig | None = None, dry_run: bool = False, reopen=None):  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    backend = FakeBackend(clock, *guests)
    journal = Journal(None)
    controller = Controller(backend, clock, config or DaemonConfig(), journal, dry_run=dry_run, reopen=reopen)
    return controller, backend, clock, journal


def test_tick_acts_and_journals_the_numbers(tmp_path: Path) -> None:
    clock = VirtualClock()
    backend = FakeBackend(clock, make_guest("a", target=4 * GiB))
    journal = Journal(tmp_path / "j.jsonl")
    controller = Controller(backend, clock, DaemonConfig(), journal)
    plan = controller.tick()
    assert plan is not None and plan.actions
    assert backend.calls == [("a", plan.actions[0].new_target)]
    journal.close()
    (entry,) = [e for e in read_journal(tmp_path / "j.jsonl") if e["kind"] == "action"]
    for key in (
        "time",
        "vm",
        "old_target",
        "new_target",
        "reason",
        "demand",
        "available",
        "budget",
        "direction",
    ):
        assert entry[key] is not None, key
    assert entry["direction"] == "shrink" and entry["applied"] is True
    status = controller.status()
    assert status.actions_by_direction == {"shrink": 1}
    assert status.actions_by_reason == {"idle": 1}
    assert status.vms[0].status == Status.MANAGED and status.ticks == 1


def test_dry_run_decides_and_journals_but_never_acts() -> None:
    controller, backend, clock, journal = setup(make_guest("a", target=4 * GiB), dry_run=True)
    for _ in range(3):
        controller.tick()
        clock.advance(2.0)
    assert backend.calls == []
    actions = [e for e in journal.recent() if e["kind"] == "action"]
    assert len(actions) == 3 and not any(e["applied"] for e in actions)
    assert controller.status().vms[0].status == Status.MANAGED  # its unchanged target is not "manual"


def test_reconnects_with_backoff_after_a_lost_connection() -> None:
    clock = VirtualClock()
    first = FakeBackend(clock, make_guest("a", target=4 * GiB))
    second = FakeBackend(clock, make_guest("a", target=4 * GiB))
    opened: list[FakeBackend] = []

    def reopen() -> FakeBackend:
        opened.append(second)
        return second

    controller = Controller(first, clock, DaemonConfig(), Journal(None), reopen=reopen)
    first.fail_snapshots = 1
    assert controller.tick() is None
    assert first.closed and controller.status().backend_errors == 1 and not controller.status().connected
    assert controller.tick() is None and opened == []  # still backing off
    clock.advance(controller.config.tunables.reconnect_initial_s)
    assert controller.tick() is not None
    status = controller.status()
    assert opened == [second] and status.reconnects == 1 and status.connected
    kinds = [e["kind"] for e in status.journal]
    assert "backend-error" in kinds and "reconnected" in kinds


def test_backoff_doubles_up_to_its_maximum() -> None:
    config = parse_config({"tunables": {"reconnect_initial_s": 1, "reconnect_max_s": 4}})
    controller, backend, clock, _ = setup(make_guest("a"), config=config)
    backend.fail_snapshots = 10
    waits = []
    for _ in range(5):
        controller.tick()
        retry = controller._retry_at
        assert retry is not None
        waits.append(retry - clock.now())
        clock.advance(retry - clock.now())
    assert waits == [1, 2, 4, 4, 4]


def test_vm_that_disappears_mid_tick_and_one_that_appears() -> None:
    controller, backend, clock, journal = setup(
        make_guest("a", target=4 * GiB), make_guest("b", target=4 * GiB)
    )
    backend.vanish_on_set.add("a")
    plan = controller.tick()
    assert plan is not None
    assert any(e["kind"] == "vm-gone" and e["vm"] == "a" for e in journal.recent())
    assert ("b", next(a.new_target for a in plan.actions if a.vm == "b")) in backend.calls
    backend.guests["c"] = make_guest("c", target=4 * GiB)
    backend.used["c"] = 1 * GiB
    clock.advance(2.0)
    plan = controller.tick()
    assert plan is not None
    assert set(plan.status) == {"b", "c"} and plan.status["c"] == Status.MANAGED
    assert any(a.vm == "c" for a in plan.actions)


def test_manual_target_from_another_thread_is_applied_and_honoured() -> None:
    controller, backend, clock, _ = setup(make_guest("a", target=4 * GiB))
    controller.tick()
    with pytest.raises(UnknownVMError):
        controller.submit_target("nope", 1 * GiB)
    with pytest.raises(LimitError):
        controller.submit_target("a", 5 * GiB)
    with pytest.raises(LimitError):
        controller.submit_target("a", 1 * MiB)
    worker = threading.Thread(target=controller.submit_target, args=("a", 3 * GiB))
    worker.start()
    worker.join()
    clock.advance(2.0)
    plan = controller.tick()
    assert plan is not None
    assert ("a", 3 * GiB) in backend.calls
    assert plan.status["a"] == Status.MANUAL_HOLD and plan.actions == ()
    assert controller.status().actions_by_reason.get("manual") == 1


def test_policy_change_from_another_thread() -> None:
    controller, backend, clock, _ = setup(make_guest("a", target=4 * GiB))
    controller.tick()
    controller.submit_policy("a", GuestPolicy(exclude=True), persist=True)
    clock.advance(2.0)
    plan = controller.tick()
    assert plan is not None and plan.status["a"] == Status.EXCLUDED
    assert backend.policies["a"].exclude
    controller.submit_policy("a", None)
    clock.advance(2.0)
    plan = controller.tick()
    assert plan is not None and plan.status["a"] == Status.EXCLUDED  # stored in metadata now


@pytest.mark.parametrize(("restore_to", "expected"), [("max", 4 * GiB), ("start", 3 * GiB)])
def test_on_exit_restore(restore_to: str, expected: int) -> None:
    config = parse_config({"on_exit": "restore", "restore_to": restore_to})
    controller, backend, _clock, journal = setup(make_guest("a", target=3 * GiB), config=config)
    stop = threading.Event()
    controller.run(stop, max_ticks=5)
    assert backend.guests["a"].target_bytes == expected
    assert journal.recent()[-1]["kind"] == "stop"


def test_on_exit_hold_leaves_targets() -> None:
    controller, backend, _clock, _ = setup(make_guest("a", target=4 * GiB))
    controller.run(threading.Event(), max_ticks=3)
    assert backend.guests["a"].target_bytes < 4 * GiB


def test_run_stops_when_the_event_is_set_and_sleeps_on_the_clock() -> None:
    controller, _backend, clock, _ = setup(make_guest("a"), config=DaemonConfig().with_interval(0.5))
    stop = threading.Event()
    seen: list[float] = []

    def on_tick(c: Controller) -> None:
        seen.append(clock.now())
        if len(seen) == 4:
            stop.set()

    controller.run(stop, on_tick=on_tick)
    assert seen == [0.0, 0.5, 1.0, 1.5]


def test_status_is_frozen_and_complete() -> None:
    controller, _, _, _ = setup(make_guest("a", target=4 * GiB))
    empty = controller.status()
    assert empty.snapshot is None and empty.vms == ()
    controller.tick()
    status = controller.status()
    vm = status.vms[0]
    assert (vm.name, vm.max_bytes) == ("a", 4 * GiB)
    assert vm.want_bytes is not None and vm.demand_bytes is not None and vm.start_target_bytes == 4 * GiB
    assert status.budget_bytes is not None and status.ticks == 1 and status.last_tick_s is not None
    with pytest.raises(AttributeError):
        status.ticks = 5  # type: ignore[misc]
    json.dumps(list(status.journal))
