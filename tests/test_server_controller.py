"""The API in front of the real controller and simulator: changes go through the controller's queue,
refusals leave the simulated host exactly as it was."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server import RunningServer, serve
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import GiB, MiB
from tests.helpers.server import TOKEN, call


@dataclass
class Daemon:
    backend: SimBackend
    controller: Controller
    journal: Journal
    server: RunningServer
    stop: threading.Event
    thread: threading.Thread

    def manual_entries(self) -> list[dict[str, Any]]:
        return [
            dict(e) for e in self.journal.recent() if e.get("reason") == "manual" or e.get("kind") == "policy"
        ]

    def halt(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    backend = SimBackend.open("sim:///demo?speed=100")
    journal = Journal()
    controller = Controller(backend, backend.clock, DaemonConfig(), journal)
    source = ControllerSource(controller, TUNABLES)
    server = serve(source, "127.0.0.1:0", token=TOKEN.encode())
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop,), kwargs={"on_tick": source.on_tick})
    thread.start()
    d = Daemon(backend, controller, journal, server, stop, thread)
    yield d
    d.halt()
    server.stop()


def test_reads_follow_the_controller(daemon: Daemon) -> None:
    status, first, _ = call(daemon.server.url + "api/v1/host")
    assert status == 200
    status, vms, _ = call(daemon.server.url + "api/v1/vms")
    assert {v["name"] for v in vms} == {"web", "db", "ci", "win10", "legacy", "stuck"}
    assert all(v["status"] for v in vms)
    status, config, _ = call(daemon.server.url + "api/v1/config")
    assert config["tunables"]["interval_s"] == daemon.controller.config.interval_s
    assert config["defaults"]["exclude"] is False
    status, events, _ = call(daemon.server.url + "api/v1/events?limit=3")
    assert events["events"][-1]["seq"] < events["events"][0]["seq"]
    status, later, _ = call(daemon.server.url + "api/v1/host")
    assert later["ticks"] >= first["ticks"]


@pytest.mark.parametrize(
    ("path", "body", "token", "status", "field"),
    [
        ("vms/web/target", {"target_bytes": 9 * GiB}, TOKEN, 422, "target_bytes"),
        ("vms/web/target", {"target_bytes": 512 * MiB}, TOKEN, 422, "target_bytes"),  # below web's min 1G
        ("vms/web/target", {"target_bytes": 2 * GiB}, "not-the-token-at-all-000", 401, "Authorization"),
        ("vms/nope/target", {"target_bytes": 2 * GiB}, TOKEN, 404, "vm"),
        ("vms/db/policy", {"shares": -1}, TOKEN, 400, "shares"),
        ("vms/db/policy", {"min_bytes": "13G"}, TOKEN, 422, "min_bytes"),
        ("vms/db/policy", b"{", TOKEN, 400, "body"),
    ],
)
def test_refusals_change_nothing_on_the_host(
    daemon: Daemon, path: str, body: Any, token: str, status: int, field: str
) -> None:
    policies = {name: daemon.controller.status().snapshot.guest(name).policy for name in ("web", "db")}  # type: ignore[union-attr]
    raw = body if isinstance(body, bytes) else None
    got, answer, _ = call(daemon.server.url + "api/v1/" + path, "POST", None if raw else body, token, raw)
    assert (got, answer["error"]["field"]) == (status, field), answer
    assert daemon.manual_entries() == []
    snap = daemon.controller.status().snapshot
    assert snap is not None
    assert {name: snap.guest(name).policy for name in ("web", "db")} == policies  # type: ignore[union-attr]


def test_target_and_policy_are_applied_by_the_controller(daemon: Daemon) -> None:
    status, body, _ = call(
        daemon.server.url + "api/v1/vms/ci/target", "POST", {"target_bytes": "3GiB"}, TOKEN
    )
    assert status == 200, body
    assert body["applied"] is True
    manual = [e for e in daemon.manual_entries() if e.get("vm") == "ci"]
    assert manual and manual[-1]["new_target"] == 3 * GiB and manual[-1]["applied"] is True
    status, body, _ = call(daemon.server.url + "api/v1/vms/db/policy", "POST", {"shares": 3000}, TOKEN)
    assert status == 200, body
    assert body["policy"]["shares"] == 3000
    assert body["policy"]["min_bytes"] == 2 * GiB  # the VM's stored min is kept
    daemon.halt()  # the simulator is not thread-safe: read it only once the loop has stopped
    assert daemon.backend.get_policy("db").shares == 3000
    assert daemon.backend.guest("ci").target_bytes == 3 * GiB  # held for the manual grace period
