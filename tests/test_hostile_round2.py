"""The second hostile probe's attacks on the HTTP server, the remote CLI, sizes, saved state, the simulated
clock, TLS and the token file, kept as tests: each one is an attack that once got through.

The servers are real (uvicorn on a loopback socket) and the clients raw sockets where a library would tidy
the request up; each test checks the answer and what the daemon logged or kept.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from starlette.testclient import TestClient

import autoballoon.cli as cli_module
from autoballoon import saved
from autoballoon.backends.base import Backend
from autoballoon.cli import remote
from autoballoon.clock import VirtualClock
from autoballoon.config import DaemonConfig, parse_config
from autoballoon.constraints import MAX_BYTES_PER_S, MAX_SECONDS, MAX_SETTING_BYTES
from autoballoon.controller import Controller
from autoballoon.errors import InvalidValueError
from autoballoon.health import HealthState
from autoballoon.journal import Journal
from autoballoon.policy import GuestRecord, PolicyState
from autoballoon.server import RunningServer, serve
from autoballoon.server.api import Api
from autoballoon.server.app import AllowedHosts, create_app
from autoballoon.server.auth import load_token
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.history import History
from autoballoon.server.listen import parse_listen
from autoballoon.server.metrics import make_registry
from autoballoon.server.renders import Renders
from autoballoon.server.tunables import TUNABLES
from autoballoon.state import StateStore
from autoballoon.units import GiB, parse_percent, parse_size, plain_number
from tests.helpers.cli import run_cli
from tests.helpers.server import TOKEN, FakeSource, asgi_client, call
from tests.helpers.simhost import sim_backend
from tests.helpers.tls import make_cert

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


# -- a body cut short is the client's doing, not a server bug ------------------------------------------------


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


# -- the CLI against a daemon that answers nonsense ----------------------------------------------------------

#: What the hostile daemon says about itself: the host the CLI's ``sim:///demo`` asks about.
HOST_ANSWER = b'{"uri": "sim:///demo"}'
DEEP = b"[" * 100_000 + b"]" * 100_000


class HostileDaemon(ThreadingHTTPServer):
    """Answers each path with fixed bytes, each answer at once or trickled a byte at a time."""

    def __init__(self, answers: dict[str, bytes], trickle_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.answers = answers
        self.trickle_s = trickle_s
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HostileDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class HostileHandler(BaseHTTPRequestHandler):
    server: HostileDaemon

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer()

    def answer(self) -> None:
        body = self.server.answers.get(self.path.removeprefix("/api/v1/"), b"{}")
        data = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        data += body
        try:
            if not self.server.trickle_s:
                self.wfile.write(data)
                return
            for byte in data[:200]:  # the client gives up long before
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.server.trickle_s)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is the CLI's."""


@pytest.fixture()
def token_file(tmp_path: Path) -> Path:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    return token


@pytest.mark.parametrize(
    ("vms", "says"),
    [
        (DEEP, "nested too deep"),
        (b'{"vms": []}', "not a list"),
        (b"7", "not a list"),
        (b'[{"status": "stuck"}]', "without a name"),
        (b'[{"name": "web", "status": ["stuck"]}]', "not text"),
        (b"\xff\xfe not json", "not JSON"),
    ],
)
def test_list_shows_the_snapshot_when_the_daemon_answers_nonsense(
    capsys: pytest.CaptureFixture[str], vms: bytes, says: str
) -> None:
    with HostileDaemon({"host": HOST_ANSWER, "vms": vms}) as daemon:
        code, out, err = run_cli(capsys, "sim:///demo", "list", "--json", "--daemon", daemon.url)
    assert code == 0, err
    assert {row["status"] for row in json.loads(out)} <= {"managed", "no-stats", "excluded"}
    (line,) = err.splitlines()
    assert line.startswith("autoballoon: warning:") and says in line, err


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (DEEP, "nested too deep"),
        (b"[1]", "whether it applied"),
        (b'{"applied": "yes"}', "whether it applied"),
        (b"{", "not JSON"),
    ],
)
def test_release_fails_in_one_line_when_the_daemon_answers_nonsense(
    capsys: pytest.CaptureFixture[str], token_file: Path, answer: bytes, says: str
) -> None:
    with HostileDaemon({"vms/web/release": answer}) as daemon:
        args = ("release", "web", "--daemon", daemon.url, "--api-token-file", str(token_file))
        code, out, err = run_cli(capsys, "sim:///demo", *args)
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("autoballoon: error:") and says in line, err


def test_an_answer_trickled_a_byte_at_a_time_cannot_hold_list(capsys: pytest.CaptureFixture[str]) -> None:
    with HostileDaemon({"host": HOST_ANSWER}, trickle_s=0.2) as daemon:
        started = time.monotonic()
        code, _, err = run_cli(capsys, "sim:///demo", "list", "--daemon", daemon.url)
        elapsed = time.monotonic() - started
    assert code == 0, err
    assert elapsed < remote.READ_TIMEOUT_S + 1.0  # once, not renewed by every byte


def test_an_answer_trickled_a_byte_at_a_time_cannot_hold_release(
    capsys: pytest.CaptureFixture[str], token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "CHANGE_TIMEOUT_S", 1.0)
    with HostileDaemon({"vms/web/release": b'{"applied": true}'}, trickle_s=0.2) as daemon:
        started = time.monotonic()
        args = ("release", "web", "--daemon", daemon.url, "--api-token-file", str(token_file))
        code, _, err = run_cli(capsys, "sim:///demo", *args)
        elapsed = time.monotonic() - started
    assert code == 1 and "within 1 s" in err
    assert elapsed < 1.0 + 1.0


# -- numbers are ASCII decimal, as documented ----------------------------------------------------------------

#: Each means 2 (or 10) to int(), float() or Fraction(), and is no documented form of a number.
NOT_ASCII_DECIMAL = ("٢G", "２G", "𝟐G", "1_0G", "٢", "1_0")


@pytest.mark.parametrize("text", NOT_ASCII_DECIMAL)
def test_a_size_in_other_digits_or_with_underscores_is_refused(text: str) -> None:
    with pytest.raises(InvalidValueError, match="expected a whole or decimal number"):
        parse_size(text)


@pytest.mark.parametrize("text", ["1_0%", "1_0", "٢٠%", "２０", "𝟐𝟎%", "1e1", "nan", "inf"])
def test_a_percentage_in_other_digits_or_with_underscores_is_refused(text: str) -> None:
    with pytest.raises(InvalidValueError, match="like 20 or 20%"):
        parse_percent(text)


def test_a_listen_port_in_other_digits_is_refused() -> None:
    with pytest.raises(InvalidValueError, match="--listen address"):
        parse_listen("127.0.0.1:٩١٨٠")
    assert parse_listen("127.0.0.1:9180") == ("127.0.0.1", 9180)


def test_plain_ascii_numbers_still_parse() -> None:
    assert parse_size(" 1.5 GiB ") == 3 * GiB // 2 and parse_size(".5G") == GiB // 2
    assert parse_percent(" 20 % ") == pytest.approx(0.2) and parse_percent("2.5") == pytest.approx(0.025)
    assert plain_number("-3", whole=True) == -3 and plain_number("0.5", whole=False) == 0.5


@pytest.fixture()
def sim(monkeypatch: pytest.MonkeyPatch) -> Backend:
    backend = sim_backend()
    monkeypatch.setattr(cli_module, "open_backend", lambda uri: backend)
    monkeypatch.setattr(backend, "close", lambda: None)
    return backend


@pytest.mark.parametrize(
    "args",
    [
        ["setmem", "VM", "２G"],
        ["setmem", "VM", "1_0G"],
        ["policy", "VM", "--min", "𝟐G"],
        ["policy", "VM", "--buffer", "1_0%"],
        ["policy", "VM", "--buffer", "٢٠"],
        ["policy", "VM", "--shares", "١٠٠"],
        ["policy", "VM", "--shares", "1_000"],
        ["setvcpus", "VM", "２"],
    ],
    ids=lambda a: " ".join(a),
)
def test_the_cli_refuses_numbers_in_other_digits_and_changes_nothing(
    sim: Backend, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    vm = sim.snapshot().guests[0].name
    before = sim.snapshot().guests, sim.get_policy(vm)
    code, out, err = run_cli(capsys, "sim:///test", *[vm if a == "VM" else a for a in args])
    assert code == 2, (out, err)
    assert "Traceback" not in err and "invalid" in err
    assert (sim.snapshot().guests, sim.get_policy(vm)) == before


@pytest.mark.parametrize("body", [{"target_bytes": "２GiB"}, {"target_bytes": "1_0GiB"}])
def test_the_api_refuses_a_size_in_other_digits(server: RunningServer, body: dict[str, str]) -> None:
    status, answer, _ = call(f"{server.url}api/v1/vms/web/target", "POST", body, TOKEN)
    assert status == 400 and answer["error"]["field"] == "target_bytes"


# -- the dashboard's cache is bounded ------------------------------------------------------------------------


def kept_renderings(api: Api) -> int:
    return sum(len(r) for r in vars(api).values() if isinstance(r, Renders))


def test_distinct_since_values_cannot_grow_the_dashboard_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token needed: every distinct ``since`` was rendered and kept until the next tick."""
    source = FakeSource()
    history = History(TUNABLES.history_points)
    snap = source.view().snapshot
    assert snap is not None
    history.add(snap)
    api = Api(source, history, TUNABLES)
    renders: list[float | None] = []
    body_of = api.dashboard_body
    monkeypatch.setattr(
        api,
        "dashboard_body",
        lambda view, snap, since, *rest: renders.append(since) or body_of(view, snap, since, *rest),
    )
    registry = make_registry(source.view, history, tick_histogram=source.tick_histogram)
    client = TestClient(create_app(api, registry, AllowedHosts("testserver")))
    for i in range(500):
        assert client.get(f"/api/v1/dashboard?since={i}.5").status_code == 200
    assert kept_renderings(api) <= TUNABLES.dashboard_slices_kept + 2  # the slices, plus vms and host
    # Pages in step still share one rendering per since.
    renders.clear()
    for _ in range(3):
        client.get("/api/v1/dashboard?since=99.5")
        client.get("/api/v1/dashboard")
    assert renders == [99.5, None]


# -- saved state the policy cannot compute with --------------------------------------------------------------

SAVED_GUESTS = "".join(
    f'[[guest]]\nname = "{vm}"\nmax = "4G"\nstats_period = 2\n'
    'demand = { shape = "constant", level = "1G" }\n'
    for vm in ("fast", "huge", "late", "fine")
)


def state_file(path: Path, wall: float) -> None:
    """A document the old schema accepted whole: each of three records holds one value beyond what the
    policy can use; the fourth record and the quarantine are sound."""
    record = {"at": wall - 10, "jump": 64 * 1024 * 1024, "rate": 1024.0, "reserved": 30 * 1024 * 1024}
    data = {
        "policy": "autoballoon",
        "quarantines": {"fine": {"since": wall - 100, "until": None, "reason": "CPU storm"}},
        "guests": {
            "fast": {**record, "rate": 1e308},
            "huge": {**record, "reserved": 2**62},
            "late": {**record, "manual_until": 1e300},
            "fine": record,
        },
    }
    envelope = {"format": "autoballoon-state", "version": 1, "saved_at": wall, "data": data}
    path.write_text(json.dumps(envelope))


def test_saved_values_beyond_what_the_policy_uses_drop_their_record_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = sim_backend(SAVED_GUESTS, ram="32G", warmup=30.0)
    path = tmp_path / "state.json"
    state_file(path, backend.clock.wall())
    with caplog.at_level(logging.WARNING, "autoballoon"):
        controller = Controller(backend, backend.clock, DaemonConfig(), Journal(None), store=StateStore(path))
    dropped = [r.getMessage() for r in caplog.records if "out of range" in r.getMessage()]
    assert len(dropped) == 3, caplog.text
    for vm, field in (("fast", "rate"), ("huge", "reserved"), ("late", "manual_until")):
        assert any(f"VM {vm}'s" in m and field in m for m in dropped), (vm, dropped)
    assert "fine" in controller.quarantined  # the rest of the file is kept
    (recalled,) = [e for e in controller.journal.recent() if e["kind"] == "recalled"]
    assert ": 1 guests" in recalled["message"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(30):
            controller.tick()
            backend.clock.sleep(controller.config.interval_s)
    assert [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)] == []
    for vm in controller.status().vms:
        assert 0 < vm.target_bytes <= 4 * GiB, vm


def test_what_the_policy_holds_beyond_the_bounds_is_cut_to_them_when_saved() -> None:
    """The bounds the load enforces must never make a save fail on what the daemon runs on."""
    record = GuestRecord(seen_time=1.0, manual_until=1e12, rate=1e15, jump=2**62, reserved=2**61)
    state = PolicyState(guests=MappingProxyType({"db": record}))
    document = saved.remember("autoballoon", HealthState(), state, now=2.0, wall=10_000.0)
    again = saved.Saved.model_validate_json(document.model_dump_json())
    assert again.dropped == {} and set(again.guests) == {"db"}
    db = again.guests["db"]
    assert (db.rate, db.jump, db.reserved) == (MAX_BYTES_PER_S, MAX_SETTING_BYTES, MAX_SETTING_BYTES)
    assert db.manual_until == db.at + MAX_SECONDS


# -- SIGTERM on a simulated host -----------------------------------------------------------------------------


def test_a_virtual_clock_sleep_returns_once_stop_is_set() -> None:
    clock = VirtualClock(speed=1.0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    clock.sleep(120.0, stop)
    assert time.monotonic() - started < 2.0
    assert 0.1 < clock.now() < 2.0  # only the virtual time the real wait stood for passed


def test_sigterm_stops_a_sim_daemon_at_once_not_after_its_interval(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    argv = [sys.executable, "-m", "autoballoon", "-c", "sim:///demo?speed=1", "run", "--no-http"]
    proc = subprocess.Popen(
        [*argv, "--interval", "120", "--journal", str(journal)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (journal.exists() and '"start"' in journal.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
        time.sleep(1.0)  # its first tick is done: it sleeps out the interval now
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, proc.stderr.read() if proc.stderr else None
    assert elapsed < 10.0
    assert '"stop"' in journal.read_text()


# -- TLS: the handshake is within the deadline ---------------------------------------------------------------


def test_with_tls_a_connection_that_never_handshakes_is_closed_at_the_deadline(tmp_path: Path) -> None:
    tls = make_cert(tmp_path)
    srv = serve(FakeSource(), "127.0.0.1:0", tls=tls, tunables=replace(TUNABLES, request_timeout_s=1.0))
    try:
        with socket.create_connection(srv.http.address, timeout=WAIT_S) as conn:
            started = time.monotonic()
            try:
                closed = conn.recv(1024) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
            elapsed = time.monotonic() - started
        assert closed and elapsed < 1.0 + 1.5, f"still open after {elapsed:.1f} s"
        context = ssl.create_default_context(cafile=str(tls.cert))  # a client that does handshake is served
        with urllib.request.urlopen(srv.url + "api/v1/host", timeout=WAIT_S, context=context) as resp:
            assert resp.status == 200
    finally:
        srv.stop()


# -- the token file ------------------------------------------------------------------------------------------


def test_a_token_file_saved_with_a_byte_order_mark_is_the_token_clients_send(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")  # Notepad's and PowerShell's UTF-8
    path.chmod(0o600)
    token = load_token(path)
    assert token == TOKEN.encode()
    srv = serve(FakeSource(), "127.0.0.1:0", token=token)
    try:
        status, body, _ = call(f"{srv.url}api/v1/vms/web/target", "POST", {"target_bytes": 2 * GiB}, TOKEN)
    finally:
        srv.stop()
    assert status == 200, body


@pytest.mark.parametrize(
    "token", ["s3cret-tökén-0123456789", "s3cret-token-0123456789\x07", "ｓ3cret-token-0123456789"]
)
def test_a_token_not_every_client_can_send_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str
) -> None:
    path = tmp_path / "token"
    path.write_text(token, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(InvalidValueError, match="ASCII letters, digits and punctuation") as refused:
        load_token(path)
    assert token not in str(refused.value) and token[7:] not in str(refused.value)  # never echoed
    journal = tmp_path / "journal.jsonl"
    args = ("run", "--listen", "127.0.0.1:0", "--api-token-file", str(path), "--journal", str(journal))
    code, _, err = run_cli(capsys, "sim:///demo", *args)
    assert code == 2 and "ASCII" in err
    assert not journal.exists()  # refused before anything started


# -- /api/v1/config names the files in use -------------------------------------------------------------------


def test_the_config_endpoint_names_the_journal_and_state_files_in_effect(tmp_path: Path) -> None:
    """``run --journal F --state S`` override the config file's paths: the API said the file's (or
    null) and had no state path at all."""
    backend = sim_backend()
    config = parse_config({"journal": "/var/log/autoballoon/from-the-file.jsonl"})
    journal, state = tmp_path / "journal.jsonl", tmp_path / "state.json"
    kept = Controller(backend, backend.clock, config, Journal(journal), store=StateStore(state))
    none = Controller(backend, backend.clock, DaemonConfig(), Journal(None))
    answers = []
    for controller in (kept, none):
        client = asgi_client(ControllerSource(controller, TUNABLES))
        answers.append(client.get("/api/v1/config").json())
    assert (answers[0]["journal_path"], answers[0]["state_path"]) == (str(journal), str(state))
    assert (answers[1]["journal_path"], answers[1]["state_path"]) == (None, None)
