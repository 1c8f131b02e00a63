"""Operator requests as futures: each one is resolved by the controller's loop with its own outcome,
refused at once when the last snapshot says it is wrong, and never lost when the connection drops.

The backend is the simulator, wrapped so that a test can make its next call fail the way libvirt does
(a lost connection, a VM that vanished, a refusal): what is under test is the controller's queue, not
libvirt's behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller, DaemonStoppedError
from autoballoon.errors import BackendError, ConnectionLostError, LimitError, RefusedError, UnknownVMError
from autoballoon.journal import Journal
from autoballoon.model import GuestPolicy
from autoballoon.server import serve
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import GiB, MiB
from tests.helpers.server import TOKEN, asgi_client, call


class Flaky:
    """The simulator, with scripted failures on its next change calls."""

    def __init__(self, inner: SimBackend) -> None:
        self.inner = inner
        self.failures: list[Exception] = []  # raised, in order, by the next set_target/set_policy calls
        self.calls: list[tuple[str, str]] = []
        self.closed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, what: str, vm: str) -> None:
        self.calls.append((what, vm))
        if self.failures:
            raise self.failures.pop(0)

    def set_target(self, vm: str, target_bytes: int, *, live: bool = True, config: bool = False) -> None:
        self._call("target", vm)
        self.inner.set_target(vm, target_bytes, live=live, config=config)

    def set_policy(self, vm: str, policy: GuestPolicy) -> None:
        self._call("policy", vm)
        self.inner.set_policy(vm, policy)

    def close(self) -> None:
        self.closed += 1


def make() -> tuple[Controller, Flaky]:
    inner = SimBackend.open("sim:///demo")
    flaky = Flaky(inner)
    controller = Controller(flaky, inner.clock, DaemonConfig(), Journal(), reopen=lambda: flaky)  # type: ignore[arg-type]
    controller.tick()  # the first snapshot: requests are checked against it
    return controller, flaky


def step(controller: Controller, flaky: Flaky, seconds: float = 2.0) -> None:
    flaky.inner.clock.sleep(seconds)
    controller.tick()


def manual(controller: Controller, vm: str) -> list[dict[str, Any]]:
    return [dict(e) for e in controller.journal.recent() if e.get("vm") == vm and e.get("reason") == "manual"]


def test_a_target_request_resolves_with_the_target_once_the_loop_has_set_it() -> None:
    controller, flaky = make()
    future = controller.submit_target("web", 3 * GiB)
    assert isinstance(future, Future) and not future.done()
    assert not future.cancel()  # only the loop resolves it
    step(controller, flaky)
    assert future.result(timeout=0) == 3 * GiB
    assert flaky.inner.guest("web").target_bytes == 3 * GiB
    assert manual(controller, "web")[-1]["applied"] is True


def test_a_wrong_request_is_refused_at_once_and_nothing_is_queued() -> None:
    controller, flaky = make()
    with pytest.raises(UnknownVMError):
        controller.submit_target("nope", GiB)
    with pytest.raises(LimitError, match="above the VM's maximum <memory>"):
        controller.submit_target("web", 64 * GiB)
    with pytest.raises(LimitError, match="below its policy minimum 1GiB"):
        controller.submit_target("web", 1 * MiB)
    with pytest.raises(UnknownVMError):
        controller.submit_policy("nope", GuestPolicy(shares=5))
    with pytest.raises(RefusedError, match="not quarantined"):
        controller.submit_release("web")
    step(controller, flaky)
    assert all(what != "policy" for what, _ in flaky.calls)
    assert manual(controller, "web") == []


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (UnknownVMError("web"), UnknownVMError),  # the VM vanished between the check and the loop
        (BackendError("setting the balloon failed", vm="web"), BackendError),
    ],
)
def test_a_request_the_backend_cannot_carry_out_resolves_with_its_error(
    failure: Exception, error: type[Exception]
) -> None:
    controller, flaky = make()
    before = flaky.inner.guest("web").target_bytes
    future = controller.submit_target("web", 3 * GiB)
    flaky.failures.append(failure)
    step(controller, flaky)
    with pytest.raises(error):
        future.result(timeout=0)
    assert flaky.inner.guest("web").target_bytes == before


def test_a_policy_the_backend_cannot_store_does_not_take_effect() -> None:
    controller, flaky = make()
    future = controller.submit_policy("db", GuestPolicy(exclude=True), persist=True)
    flaky.failures.append(BackendError("metadata write failed", vm="db"))
    step(controller, flaky)
    with pytest.raises(BackendError):
        future.result(timeout=0)
    step(controller, flaky)
    assert controller.status().plan.status["db"] != "excluded"  # type: ignore[union-attr]


def test_requests_racing_a_lost_connection_are_requeued_and_resolved_after_the_reconnect() -> None:
    controller, flaky = make()
    first = controller.submit_policy("db", GuestPolicy(shares=3000), persist=True)
    second = controller.submit_target("web", 3 * GiB)
    third = controller.submit_target("ci", 2 * GiB)
    earlier = len(flaky.calls)
    flaky.failures.append(ConnectionLostError("libvirt connection dropped"))  # hits the first request
    step(controller, flaky)
    assert not (first.done() or second.done() or third.done())  # none lost, none failed
    assert flaky.closed == 1 and controller.status().connected is False
    for _ in range(5):  # the back-off, then the reconnect
        if third.done():
            break
        step(controller, flaky, 1.0)
    assert first.result(timeout=0) == GuestPolicy(shares=3000)
    assert (second.result(timeout=0), third.result(timeout=0)) == (3 * GiB, 2 * GiB)
    assert any(e.get("kind") == "reconnected" for e in controller.journal.recent())
    # Carried out once each, in the order they came, after the call that was lost.
    after = flaky.calls[earlier : earlier + 4]
    assert after == [("policy", "db"), ("policy", "db"), ("target", "web"), ("target", "ci")]
    assert flaky.inner.get_policy("db").shares == 3000
    assert flaky.inner.guest("web").target_bytes == 3 * GiB


def test_a_request_still_queued_when_the_daemon_stops_is_resolved_with_why() -> None:
    controller, _ = make()
    future = controller.submit_target("web", 3 * GiB)
    controller.finish()
    with pytest.raises(DaemonStoppedError, match="stopped before"):
        future.result(timeout=0)


@pytest.fixture()
def daemon() -> Iterator[tuple[Controller, Flaky, str]]:
    inner = SimBackend.open("sim:///demo?speed=200")
    flaky = Flaky(inner)
    controller = Controller(flaky, inner.clock, DaemonConfig(), Journal(), reopen=lambda: flaky)  # type: ignore[arg-type]
    source = ControllerSource(controller, TUNABLES)
    server = serve(source, "127.0.0.1:0", token=TOKEN.encode())
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop,), kwargs={"on_tick": server.on_tick})
    thread.start()
    try:
        call(server.url + "api/v1/host")
        yield controller, flaky, server.url
    finally:
        stop.set()
        thread.join()
        server.stop()


def test_an_api_change_racing_a_lost_connection_is_applied_after_the_reconnect(
    daemon: tuple[Controller, Flaky, str],
) -> None:
    controller, flaky, url = daemon
    flaky.failures.append(ConnectionLostError("libvirt connection dropped"))
    status, body, _ = call(url + "api/v1/vms/web/target", "POST", {"target_bytes": "3GiB"}, TOKEN)
    assert (status, body) == (200, {"vm": "web", "target_bytes": 3 * GiB, "applied": True})
    assert controller.status().reconnects == 1
    entries = manual(controller, "web")
    assert [e["applied"] for e in entries] == [True]  # one manual change, carried out once


def test_the_api_answers_202_while_the_controller_has_not_ticked() -> None:
    inner = SimBackend.open("sim:///demo")
    controller = Controller(inner, inner.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    controller.tick()
    source.on_tick(controller)
    client = asgi_client(source, TOKEN, submit_wait_s=0.05)
    answer = client.post(
        "/api/v1/vms/web/target", json={"target_bytes": "3GiB"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 202 and answer.json()["applied"] is False
    controller.tick()  # the queued change is carried out at the next tick
    assert inner.guest("web").target_bytes == 3 * GiB


def test_a_bug_while_carrying_out_a_request_fails_that_one_and_keeps_the_others_queued() -> None:
    controller, flaky = make()
    first = controller.submit_target("web", 3 * GiB)
    second = controller.submit_target("ci", 2 * GiB)
    flaky.failures.append(RuntimeError("a bug in a backend"))
    flaky.inner.clock.sleep(2.0)
    with pytest.raises(RuntimeError):
        controller.tick()
    with pytest.raises(RuntimeError):
        first.result(timeout=0)
    assert not second.done()
    step(controller, flaky)
    assert second.result(timeout=0) == 2 * GiB
