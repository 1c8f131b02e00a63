"""The API fuzzed from its own OpenAPI description (schemathesis): valid and invalid requests on every
operation, with the token, against the real controller on the simulated host.

Two properties hold for every generated request:

- no answer is a 5xx;
- an answer in the 4xx changes nothing: after the controller's next tick the simulated host's targets
  and stored policies are as they were, and the journal has no operator change in it.

The controller runs in dry-run mode so that only operator requests can move a target: any change in the
host after a tick is then the request's doing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server import RunningServer, serve
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.tunables import TUNABLES
from tests.helpers.server import TOKEN

#: Generated requests per operation and mode at most (operations with few distinct inputs make fewer).
EXAMPLES = 100
#: Journal kinds that only an operator's request writes.
OPERATOR_KINDS = ("policy", "release", "error")

pytestmark = pytest.mark.timeout(600)


@dataclass
class Daemon:
    backend: SimBackend
    controller: Controller
    source: ControllerSource
    server: RunningServer
    seen: Counter[str]

    def host_state(self) -> tuple[dict[str, int], dict[str, Any]]:
        snap = self.backend.snapshot()
        return {g.name: g.target_bytes for g in snap.guests}, {g.name: g.policy for g in snap.guests}

    def tick(self) -> None:
        """What the daemon's loop does between two requests (the test's thread is its only caller)."""
        self.controller.tick()
        self.source.on_tick(self.controller)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    backend = SimBackend.open("sim:///demo")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal(), dry_run=True)
    source = ControllerSource(controller, TUNABLES)
    server = serve(
        source, "127.0.0.1:0", token=TOKEN.encode(), tunables=replace(TUNABLES, submit_wait_s=0.02)
    )
    d = Daemon(backend, controller, source, server, Counter())
    d.tick()
    yield d
    server.stop()
    total = sum(d.seen.values())
    print(f"\nschemathesis: {total} requests, by answer: {dict(sorted(d.seen.items()))}")


@pytest.fixture(scope="module")
def operations(daemon: Daemon) -> list[Any]:
    schema = schemathesis.openapi.from_url(daemon.server.url + "api/v1/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def check(case: Any, daemon: Daemon) -> None:
    """One generated request, and the two properties."""
    before = daemon.host_state()
    last_seq = daemon.controller.journal.recent(1)[-1]["seq"]
    response = case.call(base_url=daemon.server.url.rstrip("/"), headers={"Authorization": f"Bearer {TOKEN}"})
    daemon.seen[f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, checks=[not_a_server_error])
    daemon.tick()
    if 400 <= response.status_code < 500:
        what = f"{case.method} {case.formatted_path} -> {response.status_code}"
        assert daemon.host_state() == before, f"{what} changed the host"
        new = [e for e in daemon.controller.journal.recent() if e["seq"] > last_seq]
        operator = [e for e in new if e.get("reason") == "manual" or e.get("kind") in OPERATOR_KINDS]
        assert operator == [], f"{what} reached the controller: {operator}"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_5xx_and_a_4xx_changes_nothing(
    operations: list[Any], daemon: Daemon, mode: GenerationMode
) -> None:
    assert len(operations) == 9
    fuzzed = 0
    for operation in operations:

        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            check(case, daemon)

        try:
            fuzz()
        except Unsatisfiable:  # no invalid request exists for an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE
            continue
        fuzzed += 1
    assert fuzzed >= 4  # the changes and the parametrised reads at least


def test_the_openapi_description_covers_every_route(daemon: Daemon) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(daemon.server.url + "api/v1/openapi.json", timeout=10) as resp:
        spec = json.load(resp)
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert routes == {
        ("GET", "/api/v1/vms"),
        ("GET", "/api/v1/vms/{name}"),
        ("GET", "/api/v1/host"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/config"),
        ("GET", "/api/v1/dashboard"),
        ("POST", "/api/v1/vms/{name}/target"),
        ("POST", "/api/v1/vms/{name}/policy"),
        ("POST", "/api/v1/vms/{name}/release"),
    }
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
