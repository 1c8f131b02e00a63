"""The second hostile probe's attacks on the HTTP server, the remote CLI, sizes, saved state, the simulated
clock, TLS and the token file, kept as tests: each one is an attack that once got through.

The servers are real (uvicorn on a loopback socket) and the clients raw sockets where a library would tidy
the request up; each test checks the answer and what the daemon logged or kept.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from autoballoon.server import RunningServer, serve
from autoballoon.server.tunables import TUNABLES
from tests.helpers.server import TOKEN, FakeSource

#: Seconds a test waits for something the server does on its own thread.
WAIT_S = 5.0


class Records(logging.Handler):
    """Every record of the loggers it is attached to, whatever their propagation (uvicorn's do not reach
    the root logger, so pytest's caplog misses its tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def wait_for(self, text: str) -> list[logging.LogRecord]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = [r for r in self.records if text in r.getMessage()]
            if found:
                return found
            time.sleep(0.05)
        return []


@pytest.fixture()
def records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("autoballoon", "uvicorn", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.fixture()
def server() -> Iterator[RunningServer]:
    srv = serve(
        FakeSource(), "127.0.0.1:0", token=TOKEN.encode(), tunables=replace(TUNABLES, request_timeout_s=1.0)
    )
    yield srv
    srv.stop()


def post_head(length: int) -> bytes:
    return (
        b"POST /api/v1/vms/web/target HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % length
    )


# -- a body cut short is the client's doing, not a server bug ---------------------------------------------


@pytest.mark.parametrize("who", ["client hangs up", "server cuts off a slow body"])
def test_a_body_cut_short_is_one_info_line_not_tracebacks(
    server: RunningServer, records: Records, who: str
) -> None:
    with socket.create_connection(server.http.address, timeout=WAIT_S) as conn:
        conn.sendall(post_head(100) + b'{"target_bytes": ')
        if who == "client hangs up":
            time.sleep(0.2)
        else:
            assert conn.recv(1024) == b""  # the 1 s deadline closes it
    found = records.wait_for("hung up before sending the whole body")
    time.sleep(0.3)  # anything else the server logs about it arrives meanwhile
    assert len(found) == 1 and found[0].levelno == logging.INFO, [r.getMessage() for r in records.records]
    assert "POST /api/v1/vms/web/target" in found[0].getMessage()
    assert [r.getMessage() for r in records.records if r.levelno >= logging.WARNING] == []
    assert all(r.exc_info is None for r in records.records)


# -- the connection limit answers like the API ---------------------------------------------------------------


def read_answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One Content-Length framed answer on ``conn``: its status, headers (lower-case names) and body."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = conn.recv(65536)
        assert chunk, f"closed before an answer: {raw!r}"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    while len(body) < int(headers["content-length"]):
        body += conn.recv(65536)
    return int(status_line.split()[1]), headers, body


def test_a_request_over_the_connection_limit_is_a_json_503_with_retry_after(records: Records) -> None:
    limit = 3
    tun = replace(TUNABLES, max_connections=limit, request_timeout_s=WAIT_S)
    srv = serve(FakeSource(), "127.0.0.1:0", tunables=tun)
    held = [socket.create_connection(srv.http.address, timeout=WAIT_S) for _ in range(limit)]
    try:
        time.sleep(0.2)  # the server has accepted them all
        with socket.create_connection(srv.http.address, timeout=WAIT_S) as conn:
            conn.sendall(b"GET /api/v1/host HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, body = read_answer(conn)
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"] == str(TUNABLES.retry_after_s)
        assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers
        error = json.loads(body)["error"]
        assert error["status"] == 503 and str(limit) in error["message"]
        for conn in held[:2]:  # below the limit again: answered as usual
            conn.close()
        time.sleep(0.2)
        conn = held[2]
        conn.sendall(b"GET /api/v1/host HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(conn)[0] == 200
    finally:
        for conn in held:
            conn.close()
        srv.stop()
    warned = [r.getMessage() for r in records.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "503" in warned[0], warned


def test_the_api_description_lists_the_503_of_the_connection_limit() -> None:
    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    (row,) = [ln for ln in text.splitlines() if ln.startswith("| 503 |")]
    assert f"limit of {TUNABLES.max_connections} open connections" in row and "Retry-After" in row
