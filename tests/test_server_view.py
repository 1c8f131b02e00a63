"""One status shape from the controller to the JSON: the server's view carries the controller's status by
field name, and the host answer shows the view's fields by theirs, so neither is a copy written out field
by field that a new status value can miss."""

from __future__ import annotations

from dataclasses import fields

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller, ControllerStatus
from autoballoon.journal import Journal
from autoballoon.server.controller_source import NOT_SHOWN, ControllerSource, view_of
from autoballoon.server.source import CARRIED, HOST_FIELDS, ServerView
from autoballoon.server.tunables import TUNABLES
from tests.helpers.server import FakeSource, asgi_client


def test_every_status_field_is_carried_into_the_view_or_said_why_not() -> None:
    status_fields = {f.name for f in fields(ControllerStatus)}
    assert set(CARRIED) <= status_fields  # a carried name the status lacks would fail at the first tick
    assert set(NOT_SHOWN) <= status_fields  # no reason kept for a field that is gone
    assert status_fields - set(CARRIED) == set(NOT_SHOWN)
    assert all(NOT_SHOWN.values())


def test_the_view_of_a_real_status_has_every_carried_value() -> None:
    backend = SimBackend.open("sim:///demo")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    for _ in range(3):
        controller.tick()
    status = controller.status()
    view = view_of(status, tick_p50_s=0.5, config={"source": None})
    assert status.snapshot is not None and status.ticks == 3 and status.journal
    for name in CARRIED:
        assert getattr(view, name) == getattr(status, name), name
    assert view.tick_p50_s == 0.5 and view.config == {"source": None}
    source = ControllerSource(controller, TUNABLES)
    source.on_tick(controller)
    assert source.view().journal == status.journal and source.view().ticks == status.ticks


def test_the_host_answer_shows_every_host_field_of_the_view() -> None:
    source = FakeSource()
    view: ServerView = source.view()
    body = asgi_client(source).get("/api/v1/host").json()
    assert {"ticks", "uri", "tick_p99_s", "shrink_paused"} <= set(HOST_FIELDS)
    assert {name: body[name] for name in HOST_FIELDS} == {name: getattr(view, name) for name in HOST_FIELDS}
