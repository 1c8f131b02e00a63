"""The JSON API over a real socket: every endpoint, the token, and refusals that change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.server import DEFAULT_LISTEN, RunningServer, serve
from autoballoon.server.auth import load_token
from autoballoon.server.listen import parse_listen
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import GiB, MiB
from tests.helpers.server import TOKEN, FakeSource, call


class Swappable:
    """One server per module (starting and stopping one costs 0.2 s), with a fresh fake for each test."""

    def __init__(self) -> None:
        self.inner = FakeSource()

    @property
    def tick_histogram(self) -> Any:
        return self.inner.tick_histogram

    def view(self) -> Any:
        return self.inner.view()

    def submit_target(self, vm: str, target_bytes: int, *, force: bool = False) -> Any:
        return self.inner.submit_target(vm, target_bytes, force=force)

    def submit_policy(self, vm: str, policy: Any) -> Any:
        return self.inner.submit_policy(vm, policy)

    def submit_release(self, vm: str) -> Any:
        return self.inner.submit_release(vm)


@pytest.fixture(scope="module")
def holder() -> Swappable:
    return Swappable()


@pytest.fixture()
def source(holder: Swappable) -> FakeSource:
    holder.inner = FakeSource()
    return holder.inner


@pytest.fixture(scope="module")
def _server(holder: Swappable) -> Iterator[RunningServer]:
    srv = serve(holder, "127.0.0.1:0", token=TOKEN.encode())
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def _readonly(holder: Swappable) -> Iterator[RunningServer]:
    srv = serve(holder, "127.0.0.1:0")
    yield srv
    srv.stop()


@pytest.fixture()
def server(_server: RunningServer, source: FakeSource) -> RunningServer:
    _server.history.clear()
    _server.sampler.sample_once()
    return _server


@pytest.fixture()
def readonly(_readonly: RunningServer, source: FakeSource) -> RunningServer:
    return _readonly


def test_vms_lists_every_vm_with_status(server: RunningServer, source: FakeSource) -> None:
    status, body, headers = call(server.url + "api/v1/vms")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    snap = source.view().snapshot
    assert snap is not None
    assert [v["name"] for v in body] == snap.names
    batch = next(v for v in body if v["name"] == "batch")
    assert batch["status"] == "stuck"
    assert "12 s" in batch["status_reason"]
    web = next(v for v in body if v["name"] == "web")
    assert web["target_bytes"] == 3072 * MiB
    assert web["max_bytes"] == 4 * GiB
    assert web["stats_age_s"] == pytest.approx(3.0)


def test_vm_detail_and_unknown_vm(server: RunningServer) -> None:
    status, body, _ = call(server.url + "api/v1/vms/db")
    assert status == 200
    assert body["policy"]["min_bytes"] == 2 * GiB
    assert body["stats"]["swap_in_bytes"] == 4096
    assert body["status"] == "managed"
    status, body, _ = call(server.url + "api/v1/vms/nosuch")
    assert status == 404
    assert body["error"]["field"] == "vm"
    assert "nosuch" in body["error"]["message"]


def test_host_includes_budget_reserve_and_counters(server: RunningServer) -> None:
    status, body, _ = call(server.url + "api/v1/host")
    assert status == 200
    assert body["mem_total_bytes"] == 32 * GiB
    assert body["budget_bytes"] == 18 * GiB
    assert body["reserve_bytes"] == 1 * GiB
    assert body["sum_max_bytes"] == 14 * GiB
    assert body["overcommit_ratio"] == pytest.approx(14 / 32)
    assert body["backend_errors"] == 3
    assert body["ticks"] == 7


def test_events_newest_first_and_paged(server: RunningServer) -> None:
    status, body, _ = call(server.url + "api/v1/events?limit=5")
    assert status == 200
    assert [e["seq"] for e in body["events"]] == [13, 12, 11, 10, 9]
    assert body["next_before"] == 9
    status, body, _ = call(server.url + "api/v1/events?limit=5&before=9")
    assert [e["seq"] for e in body["events"]] == [8, 7, 6, 5, 4]
    status, body, _ = call(server.url + "api/v1/events?limit=5&before=4")
    assert [e["seq"] for e in body["events"]] == [3, 2, 1]
    assert body["next_before"] is None
    status, body, _ = call(server.url + "api/v1/events?vm=batch")
    assert {e["vm"] for e in body["events"]} == {"batch"}
    assert len(body["events"]) == 5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("before=-1", "before"),
        ("page=2", "page"),
    ],
)
def test_events_bad_query_is_400_naming_it(server: RunningServer, query: str, field: str) -> None:
    status, body, _ = call(server.url + "api/v1/events?" + query)
    assert status == 400
    assert body["error"]["field"] == field


def test_config_is_the_effective_tunables(server: RunningServer) -> None:
    status, body, _ = call(server.url + "api/v1/config")
    assert status == 200
    assert body == {"interval_s": 2.0, "buffer": 0.2}


def test_dashboard_has_history_and_actions(server: RunningServer, source: FakeSource) -> None:
    source.tick()
    server.sampler.sample_once()
    status, body, _ = call(server.url + "api/v1/dashboard")
    assert status == 200
    web = next(v for v in body["vms"] if v["name"] == "web")
    assert web["history"]["t"] == [100.0, 102.0]
    assert web["history"]["target"] == [3072 * MiB, 3072 * MiB]
    assert [a["seq"] for a in body["actions"]][:3] == [12, 11, 10]
    assert body["events"][0]["kind"] == "stuck"
    assert body["writable"] is True


def test_dashboard_since_sends_only_the_newer_chart_points(server: RunningServer, source: FakeSource) -> None:
    for _ in range(3):
        source.tick()
        server.sampler.sample_once()
    status, full, _ = call(server.url + "api/v1/dashboard")
    assert status == 200 and full["history_until"] == 106.0 and full["history_points"] == 240
    web = next(v for v in full["vms"] if v["name"] == "web")
    assert web["history"]["t"] == [100.0, 102.0, 104.0, 106.0]
    status, part, _ = call(server.url + "api/v1/dashboard?since=102")
    web = next(v for v in part["vms"] if v["name"] == "web")
    assert web["history"]["t"] == [104.0, 106.0] and len(web["history"]["target"]) == 2
    status, part, _ = call(server.url + "api/v1/dashboard?since=106")
    assert all(v["history"]["t"] == [] for v in part["vms"])
    for bad in ("-1", "nan", "inf", "soon"):
        status, body, _ = call(server.url + "api/v1/dashboard?since=" + bad)
        assert (status, body["error"]["field"]) == (400, "since"), bad


def test_unknown_endpoint_and_method(server: RunningServer) -> None:
    assert call(server.url + "api/v1/nothing")[0] == 404
    status, _body, headers = call(server.url + "api/v1/vms", method="POST", body={})
    assert status == 405
    assert headers["Allow"] == "GET"
    status, _, headers = call(server.url + "api/v1/vms/web/target")
    assert status == 405
    assert headers["Allow"] == "POST"


def test_no_snapshot_yet_is_503(readonly: RunningServer, source: FakeSource) -> None:
    source.state = replace(source.state, snapshot=None)
    status, _body, headers = call(readonly.url + "api/v1/vms")
    assert status == 503
    assert headers["Retry-After"] == "1"


# -- changes ---------------------------------------------------------------------------------------------


def test_target_with_token_is_submitted(server: RunningServer, source: FakeSource) -> None:
    status, body, _ = call(server.url + "api/v1/vms/web/target", "POST", {"target_bytes": "2GiB"}, TOKEN)
    assert status == 200, body
    assert body == {"vm": "web", "target_bytes": 2 * GiB, "applied": True}
    assert source.submitted == [("target", "web", 2 * GiB)]
    # Below what web uses (1.5 GiB): refused as setmem refuses it, unless forced as setmem --force is.
    status, body, _ = call(server.url + "api/v1/vms/web/target", "POST", {"target_bytes": GiB}, TOKEN)
    assert status == 422 and "below what the guest uses now" in body["error"]["message"], body
    assert source.submitted[-1] == ("target", "web", 2 * GiB)
    status, body, _ = call(
        server.url + "api/v1/vms/web/target", "POST", {"target_bytes": GiB, "force": True}, TOKEN
    )
    assert status == 200, body
    assert source.submitted[-1] == ("target", "web", GiB)
    status, body, _ = call(
        server.url + "api/v1/vms/web/target", "POST", {"target_bytes": GiB, "force": "yes"}, TOKEN
    )
    assert status == 400 and body["error"]["field"] == "force", body


def test_policy_with_token_is_merged_and_submitted(server: RunningServer, source: FakeSource) -> None:
    status, body, _ = call(
        server.url + "api/v1/vms/db/policy",
        "POST",
        {"shares": 500, "buffer": "30%", "max_bytes": None},
        TOKEN,
    )
    assert status == 200, body
    assert body["policy"]["shares"] == 500
    assert body["policy"]["buffer"] == pytest.approx(0.3)
    assert body["policy"]["min_bytes"] == 2 * GiB  # kept: only the fields given change
    stored = GuestPolicy(min_bytes=2 * GiB, shares=500, buffer=0.3)  # db's min kept, its max unset
    assert source.submitted == [("policy", "db", stored)]


BAD_REQUESTS = [
    # (path, body or raw bytes, token, status, field)
    ("vms/web/target", {"target_bytes": GiB}, None, 401, "Authorization"),
    ("vms/web/target", {"target_bytes": GiB}, "wrong-token-0123456789abcdef", 401, "Authorization"),
    ("vms/web/target", {"target_bytes": GiB}, TOKEN[:-1], 401, "Authorization"),
    ("vms/web/target", b"{not json", TOKEN, 400, "body"),
    ("vms/web/target", b"[1, 2]", TOKEN, 400, "body"),
    ("vms/web/target", b"\xff\xfe", TOKEN, 400, "body"),
    ("vms/nosuch/target", {"target_bytes": GiB}, TOKEN, 404, "vm"),
    ("vms/web/target", {"target_bytes": 5 * GiB}, TOKEN, 422, "target_bytes"),
    ("vms/web/target", {"target_bytes": "5GiB"}, TOKEN, 422, "target_bytes"),
    ("vms/web/target", {"target_bytes": 1 * MiB}, TOKEN, 422, "target_bytes"),
    ("vms/web/target", {"target_bytes": -1}, TOKEN, 400, "target_bytes"),
    ("vms/web/target", {"target_bytes": 1.5e9}, TOKEN, 400, "target_bytes"),
    ("vms/web/target", {"target_bytes": True}, TOKEN, 400, "target_bytes"),
    ("vms/web/target", {"target_bytes": "lots"}, TOKEN, 400, "target_bytes"),
    ("vms/web/target", {}, TOKEN, 400, "target_bytes"),
    ("vms/web/target", {"target_bytes": GiB, "live": True}, TOKEN, 400, "live"),
    ("vms/db/policy", {"shares": -5}, TOKEN, 400, "shares"),
    ("vms/db/policy", {"shares": 0}, TOKEN, 400, "shares"),
    ("vms/db/policy", {"shares": "many"}, TOKEN, 400, "shares"),
    ("vms/db/policy", {"max_bytes": 9 * GiB}, TOKEN, 422, "max_bytes"),
    ("vms/db/policy", {"min_bytes": 1 * MiB}, TOKEN, 400, "min_bytes"),  # below any policy's range
    ("vms/db/policy", {"max_bytes": "1GiB"}, TOKEN, 422, "min_bytes"),  # below the stored min of 2 GiB
    ("vms/db/policy", {"buffer": 11}, TOKEN, 400, "buffer"),
    ("vms/db/policy", {"buffer": "lots"}, TOKEN, 400, "buffer"),
    ("vms/db/policy", {"exclude": "yes"}, TOKEN, 400, "exclude"),
    ("vms/db/policy", {"colour": "red"}, TOKEN, 400, "colour"),
    ("vms/db/policy", {}, TOKEN, 400, "body"),
    ("vms/db/policy", {"exclude": 1}, TOKEN, 400, "exclude"),  # lax pydantic would take 1 as true
    ("vms/web/target", {"target_bytes": GiB, "force": 1}, TOKEN, 400, "force"),
    ("vms/batch/release", {"now": True}, TOKEN, 400, "now"),  # batch is quarantined: only the body is wrong
    ("vms/batch/release", b"[]", TOKEN, 400, "body"),
]


@pytest.mark.parametrize(("path", "body", "token", "status", "field"), BAD_REQUESTS)
def test_bad_change_is_4xx_naming_the_field_and_changes_nothing(
    server: RunningServer,
    source: FakeSource,
    path: str,
    body: Any,
    token: str | None,
    status: int,
    field: str,
) -> None:
    before = source.view()
    raw = body if isinstance(body, bytes) else None
    got, answer, headers = call(server.url + "api/v1/" + path, "POST", None if raw else body, token, raw)
    assert got == status, answer
    assert answer["error"]["field"] == field
    assert answer["error"]["message"]
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert source.submitted == []
    assert source.view() is before


def test_changes_are_off_without_a_token_file(readonly: RunningServer, source: FakeSource) -> None:
    status, body, _ = call(readonly.url + "api/v1/vms/web/target", "POST", {"target_bytes": GiB}, TOKEN)
    assert status == 403
    assert "--api-token-file" in body["error"]["message"]
    assert source.submitted == []


def test_oversized_body_is_413(server: RunningServer, source: FakeSource) -> None:
    raw = b"{" + b" " * (TUNABLES.max_body_bytes + 1) + b"}"
    status, _body, _ = call(server.url + "api/v1/vms/web/target", "POST", token=TOKEN, raw=raw)
    assert status == 413
    assert source.submitted == []


def test_token_file_rules(tmp_path: Any) -> None:
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert load_token(good) == TOKEN.encode()
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(ValueError, match="API token file"):
        load_token(short)
    with pytest.raises(ValueError, match="readable"):
        load_token(tmp_path / "missing")


def test_static_pages_and_security_headers(readonly: RunningServer) -> None:
    status, text, headers = call(readonly.url)
    assert status == 200
    assert b'src="/app.js"' in text
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("app.js", "style.css"):
        status, text, _ = call(readonly.url + name)
        assert status == 200 and len(text) > 100
    assert b"http" not in call(readonly.url + "style.css")[1]  # no external fonts or images
    assert call(readonly.url + "nothing.html")[0] == 404
    assert call(readonly.url + "../pyproject.toml")[0] == 404


def test_listen_address_defaults_to_loopback_never_every_interface() -> None:
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")
    assert parse_listen(":9180") == ("127.0.0.1", 9180)
    assert parse_listen("[::1]:9180") == ("::1", 9180)
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)  # every interface only when asked for
    for bad in ("9180", "host:", "host:port", "127.0.0.1:65536", "127.0.0.1:-1"):
        with pytest.raises(InvalidValueError, match="--listen"):
            parse_listen(bad)
