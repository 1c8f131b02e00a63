"""The dashboard's data for charts an operator can read: a coarse history for the 1 h and 6 h windows (the
page had a fixed window of the last 240 ticks, 8 minutes), and event lists where a repeated entry (a stuck
VM's retries) is folded into one with its count instead of pushing every other entry out."""

from __future__ import annotations

from dataclasses import replace

from autoballoon.server.api import folded
from autoballoon.server.history import History
from autoballoon.server.tunables import TUNABLES
from tests.helpers.server import FakeSource, asgi_client, host


def test_the_coarse_history_keeps_a_point_a_period_in_a_bounded_ring() -> None:
    history = History(points=10, coarse_points=5, coarse_period_s=60.0)
    base = host()
    for i in range(0, 601, 2):  # ten minutes of ticks every 2 s
        history.add(replace(base, time=100.0 + i, wall_time=base.wall_time + i))
    fine = history.series("web")
    coarse = history.coarse_series("web")
    assert len(fine["t"]) == 10  # the fine ring: the last 20 s
    assert len(coarse["t"]) == 5  # the coarse ring: its last five points, a minute apart
    assert [b - a for a, b in zip(coarse["t"], coarse["t"][1:], strict=False)] == [60.0] * 4
    assert coarse["max"][-1] == base.guests[0].max_bytes and isinstance(coarse["max"][-1], int)
    assert coarse["t"][-1] == 700.0
    assert history.coarse_series("web", since=coarse["t"][-2])["t"] == [coarse["t"][-1]]
    assert history.coarse_series("nope")["t"] == []


def test_repeated_entries_are_folded_with_their_count() -> None:
    retry = {"vm": "stuck", "kind": "action", "reason": "retry", "old_target": 1, "new_target": 1}
    other = {"vm": "web", "kind": "action", "reason": "idle", "old_target": 4, "new_target": 3}
    newest_first = [{**retry, "seq": 9}, {**other, "seq": 8}, {**retry, "seq": 7}, {**retry, "seq": 6}]
    out = folded(newest_first, limit=2)
    assert [(e["vm"], e["repeats"], e["seq"]) for e in out] == [("stuck", 3, 9), ("web", 1, 8)]
    assert [e["seq"] for e in folded(newest_first, limit=1)] == [9]


def test_the_dashboard_sends_the_coarse_history_for_a_long_window() -> None:
    source = FakeSource()
    history = History(TUNABLES.history_points, TUNABLES.coarse_points, TUNABLES.coarse_period_s)
    client = asgi_client(source, history=history)
    history.add(source.view().snapshot)  # type: ignore[arg-type]  # the fake always has one
    short = client.get("/api/v1/dashboard?window=600").json()
    long = client.get("/api/v1/dashboard?window=21600").json()
    assert short["history_coarse"] is False and short["history_points"] == TUNABLES.history_points
    assert long["history_coarse"] is True and long["history_points"] == TUNABLES.coarse_points
    assert long["vms"][0]["history"]["t"] == [source.view().snapshot.time]  # type: ignore[union-attr]
    assert client.get("/api/v1/dashboard?window=100000").status_code in (400, 422)
