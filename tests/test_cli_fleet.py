"""``autoballoon fleet``: the table built from Prometheus's answers, and the errors an operator meets.

The command against a real Prometheus is in ``tests/test_fleet_prometheus.py``; here the pure core gets
hand-written answers, and the error paths meet servers that are not (or not quite) Prometheus.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from autoballoon.cli.fleet import FLEET_QUERIES, HOST_QUERIES, Samples, build_view
from tests.cli_runner import run_cli
from tests.prometheus_fleet import free_port


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "fleet", *args)


def answers() -> tuple[dict[str, Samples], dict[str, Samples]]:
    """hv-a up and short; hv-b down: seen in the last day, so only liveness and last tick are known."""
    host: dict[str, Samples] = {key: [] for key in HOST_QUERIES}
    host["up"] = [({"host": "hv-a"}, 1.0), ({"host": "hv-b"}, 0.0)]
    host["reclaimed"] = [
        ({"host": "hv-a", "measure": "balloon"}, 3.0 * 2**30),
        ({"host": "hv-a", "measure": "host_rss"}, 2.5 * 2**30),
    ]
    host["budget"] = [({"host": "hv-a"}, 14.0 * 2**30)]
    host["memory"] = [({"host": "hv-a"}, 16.0 * 2**30)]
    host["overcommit"] = [({"host": "hv-a"}, 1.125)]
    host["short"] = [({"host": "hv-a"}, 1.0)]
    host["vms"] = [({"host": "hv-a", "status": "managed"}, 3.0), ({"host": "hv-a", "status": "stuck"}, 0.0)]
    host["last_tick_age"] = [({"host": "hv-a"}, 0.4), ({"host": "hv-b"}, 3600.0)]
    fleet: dict[str, Samples] = {key: [] for key in FLEET_QUERIES}
    fleet["reclaimed"] = [({"measure": "balloon"}, 3.0 * 2**30)]
    fleet["budget"] = [({}, 14.0 * 2**30)]
    fleet["overcommit"] = [({}, float("nan"))]
    fleet["vms"] = [({"status": "managed"}, 3.0)]
    return host, fleet


def test_the_view_keeps_a_down_host_with_nothing_but_its_liveness() -> None:
    view = build_view("http://p:9090", 1_800_000_000.0, *answers()).to_json()
    a, b = view["hosts"]
    assert a == {
        "host": "hv-a",
        "up": True,
        "short": True,
        "reclaimed_bytes": {"balloon": 3 * 2**30, "host_rss": int(2.5 * 2**30)},
        "budget_bytes": 14 * 2**30,
        "memory_total_bytes": 16 * 2**30,
        "overcommit_ratio": 1.125,
        "vms": {"managed": 3, "stuck": 0},
        "last_tick_age_s": 0.4,
    }
    assert b["host"] == "hv-b" and b["up"] is False and b["last_tick_age_s"] == 3600.0
    assert b["short"] is None and b["budget_bytes"] is None and b["reclaimed_bytes"] == {} and b["vms"] == {}
    totals = view["fleet"]
    assert (totals["hosts"], totals["hosts_up"], totals["hosts_short"]) == (2, 1, 1)
    assert totals["memory_total_bytes"] is None and totals["overcommit_ratio"] is None  # no answer, NaN
    assert json.loads(json.dumps(view)) == view  # plain JSON: stable names, integers of bytes


def test_a_bad_address_is_refused_and_an_unreachable_one_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--prometheus", "prometheus:9090")
    assert code == 2 and out == "" and "invalid Prometheus address 'prometheus:9090'" in err
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "--prometheus", url, "--json")
    assert code == 1 and out == "" and f"cannot reach Prometheus at {url}" in err
    code, _, err = run(capsys)
    assert code == 2 and "--prometheus" in err


class Canned(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's ``answer``: (status, content type, body)."""

    def do_GET(self) -> None:
        status, ctype, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def canned() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((404, "text/html", b"<h1>nope</h1>"), "answered HTTP 404 Not Found: is this a Prometheus server?"),
        (
            (400, "application/json", b'{"status":"error","errorType":"bad_data","error":"parse error"}'),
            "answered HTTP 400 Bad Request: parse error",
        ),
        ((200, "text/html", b"<html>a dashboard</html>"), "is not JSON: is this a Prometheus server?"),
        ((200, "application/json", b'{"status":"success","data":{"resultType":"matrix"}}'), "query API"),
    ],
)
def test_a_server_that_is_not_prometheus_fails_with_what_it_said(
    canned: http.server.HTTPServer,
    capsys: pytest.CaptureFixture[str],
    answer: tuple[int, str, bytes],
    message: str,
) -> None:
    canned.answer = answer  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{canned.server_address[1]}/"
    code, out, err = run(capsys, "--prometheus", url)
    assert code == 1 and out == "" and message in err, err
