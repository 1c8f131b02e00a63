"""The HTTP edge, attacked as a hostile client would: odd names in paths, quotes in errors, chunked bodies,
slow and rebinding clients, exposed listen addresses, loose token files and pathological JSON.

Each test drives a real server over a real socket (raw bytes where a library would tidy the request up)
and checks both the answer and that nothing changed behind it.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autoballoon.cli import main
from autoballoon.errors import InvalidValueError
from autoballoon.server import RunningServer, Tls, check_listen, serve
from autoballoon.server.auth import load_token
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import GiB
from tests import needs
from tests.helpers.server import TOKEN, FakeSource, call, guest, host
from tests.helpers.tls import make_cert

#: VM names that need percent-encoding in a URL.
ODD_NAMES = ("vm-é", "vm with spaces", 'quote"d', "100%")


@pytest.fixture()
def source() -> FakeSource:
    src = FakeSource()
    odd = tuple(guest(name, 2, 1024) for name in ODD_NAMES)
    snap = host()
    src.state = replace(src.state, snapshot=replace(snap, guests=snap.guests + odd))
    src.quarantined = set(ODD_NAMES)
    return src


@pytest.fixture()
def server(source: FakeSource) -> Iterator[RunningServer]:
    srv = serve(
        source, "127.0.0.1:0", token=TOKEN.encode(), tunables=replace(TUNABLES, request_timeout_s=1.0)
    )
    yield srv
    srv.stop()


def raw_exchange(srv: RunningServer, data: bytes, *, wait_s: float = 5.0) -> bytes:
    """Send ``data`` as it is on one connection; everything the server answers until it closes or goes
    quiet for a moment."""
    host, port = srv.http.address
    with socket.create_connection((host, port), timeout=wait_s) as conn:
        conn.sendall(data)
        received = b""
        conn.settimeout(1.0)
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def run_cli(*args: str) -> int:
    """``autoballoon ARGS...`` in-process; its exit code."""
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of each HTTP/1.1 response in ``raw`` (Content-Length framed, as the server
    sends them)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length"
        )
        out.append((status, rest[:length]))
        raw = rest[length:]
    return out


# -- paths are percent-decoded ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_vm_whose_name_needs_encoding_can_be_read_and_changed(
    server: RunningServer, source: FakeSource, name: str
) -> None:
    quoted = urllib.request.quote(name, safe="")
    status, body, _ = call(f"{server.url}api/v1/vms/{quoted}")
    assert status == 200, body
    assert body["name"] == name
    status, body, _ = call(f"{server.url}api/v1/vms/{quoted}/target", "POST", {"target_bytes": GiB}, TOKEN)
    assert (status, body["vm"]) == (200, name)
    assert source.submitted == [("target", name, GiB)]


def test_release_command_reaches_a_vm_whose_name_needs_encoding(
    server: RunningServer, source: FakeSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    assert run_cli("release", "vm-é", "--daemon", server.url, "--api-token-file", str(token)) == 0
    assert capsys.readouterr().out.strip() == "vm-é: released"
    assert "vm-é" not in source.quarantined


# -- every error is JSON -----------------------------------------------------------------------------------


def test_errors_are_valid_json_even_when_the_message_quotes(server: RunningServer) -> None:
    status, body, _ = call(f"{server.url}api/v1/vms/no%22such")  # an unknown VM named no"such
    assert status == 404 and 'no"such' in body["error"]["message"]
    # A request line the HTTP parser refuses (the stdlib put the quote raw into its JSON template).
    ((status, raw),) = responses(
        raw_exchange(server, b'GET /api/v1/vms HTTP/1.1"\r\nHost: 127.0.0.1\r\n\r\n')
    )
    assert status == 400
    assert json.loads(raw)["error"]["status"] == 400


# -- chunked bodies ----------------------------------------------------------------------------------------


def test_a_chunked_body_is_read_and_the_connection_stays_in_step(
    server: RunningServer, source: FakeSource
) -> None:
    body = json.dumps({"target_bytes": "2GiB"}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:])) + b"0\r\n\r\n"
    request = (
        b"POST /api/v1/vms/web/target HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n" + chunked
    )
    follow_up = b"GET /api/v1/host HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answers = responses(raw_exchange(server, request + follow_up))
    assert [status for status, _ in answers] == [200, 200], answers
    assert json.loads(answers[0][1]) == {"vm": "web", "target_bytes": 2 * GiB, "applied": True}
    assert source.submitted == [("target", "web", 2 * GiB)]


def test_a_chunked_body_over_the_limit_is_413_and_changes_nothing(
    server: RunningServer, source: FakeSource
) -> None:
    part = b" " * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for _ in range(TUNABLES.max_body_bytes // 8192 + 2))
    request = (
        b"POST /api/v1/vms/web/target HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    ((status, body), *_) = responses(raw_exchange(server, request))
    assert status == 413 and json.loads(body)["error"]["field"] == "body"
    assert source.submitted == []


# -- backlog and slow clients ------------------------------------------------------------------------------


def test_the_listen_backlog_is_the_tunable_not_five(server: RunningServer) -> None:
    ss = shutil.which("ss")
    if ss is None:
        needs.missing("ss (iproute2) is needed to read a listening socket's backlog")
    port = server.http.address[1]
    out = subprocess.run([ss, "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    (line,) = out.splitlines()
    assert int(line.split()[2]) == TUNABLES.listen_backlog  # Send-Q of a listening socket: its backlog


def test_a_client_trickling_its_headers_is_cut_off_at_the_deadline(server: RunningServer) -> None:
    host, port = server.http.address
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as conn:
        closed = False
        for byte in b"GET /api/v1/host HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                conn.sendall(bytes([byte]))
                conn.settimeout(0.2)
                if conn.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    elapsed = time.monotonic() - started
    assert closed, "the server kept waiting for a client that never finished its headers"
    assert elapsed < 1.0 + 1.5  # the 1 s deadline, not a per-read timeout that every byte renews


def test_a_connection_that_sends_nothing_is_closed(server: RunningServer) -> None:
    host, port = server.http.address
    with socket.create_connection((host, port), timeout=5) as conn:
        started = time.monotonic()
        assert conn.recv(1024) == b""
        assert time.monotonic() - started < 3.0


# -- Host header (DNS rebinding) ---------------------------------------------------------------------------


def get_with_host(srv: RunningServer, host_header: str) -> tuple[int, Any]:
    request = f"GET /api/v1/vms HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode()
    ((status, body),) = responses(raw_exchange(srv, request))
    return status, json.loads(body)


def test_a_foreign_host_header_is_refused(server: RunningServer) -> None:
    port = server.http.address[1]
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", "LOCALHOST.", f"[::1]:{port}"):
        assert get_with_host(server, good)[0] == 200, good
    for bad in (
        f"attacker.example:{port}",
        "rebind.127.0.0.1.nip.io",
        "10.0.0.1",
        "localhost.attacker.example",
    ):
        status, body = get_with_host(server, bad)
        assert status == 421, bad
        assert body["error"]["field"] == "Host" and "--allow-host" in body["error"]["message"]


def test_names_the_operator_allows_are_answered(source: FakeSource) -> None:
    srv = serve(source, "127.0.0.1:0", allow_hosts=["Dash.Example"])
    try:
        assert get_with_host(srv, f"dash.example:{srv.http.address[1]}")[0] == 200
        assert get_with_host(srv, "other.example")[0] == 421
    finally:
        srv.stop()


# -- listening beyond loopback -----------------------------------------------------------------------------


def test_a_non_loopback_listen_needs_tls_or_insecure_listen(caplog: pytest.LogCaptureFixture) -> None:
    for exposed in ("0.0.0.0:9180", "[::]:9180", "192.0.2.1:9180", "myhost.example:9180"):
        with pytest.raises(InvalidValueError, match="--insecure-listen"):
            check_listen(exposed, token_file=None, tls=None, insecure=False)
    check_listen("[::1]:9180", token_file=None, tls=None, insecure=False)
    with caplog.at_level(logging.WARNING, "autoballoon.server"):
        check_listen("0.0.0.0:9180", token_file=None, tls=None, insecure=True)
    assert "in clear" in caplog.text


def test_run_refuses_an_exposed_listen_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "journal.jsonl"
    assert run_cli("--connect", "sim:///demo", "run", "--listen", "0.0.0.0:0", "--journal", str(journal)) == 2
    assert "--insecure-listen" in capsys.readouterr().err
    assert not journal.exists()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_cert(tmp_path_factory.mktemp("tls"))


def test_tls_serves_https_and_allows_an_exposed_listen(cert: Tls, source: FakeSource) -> None:
    check_listen("0.0.0.0:9180", token_file=None, tls=cert, insecure=False)
    srv = serve(source, "127.0.0.1:0", tls=cert)
    try:
        assert srv.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert.cert))
        with urllib.request.urlopen(srv.url + "api/v1/host", timeout=10, context=context) as resp:
            assert json.load(resp)["ticks"] == 7
    finally:
        srv.stop()
    with pytest.raises(InvalidValueError, match="--tls-cert"):
        check_listen("127.0.0.1:0", token_file=None, tls=Tls(cert.key, cert.cert), insecure=False)


# -- the token file ----------------------------------------------------------------------------------------


def test_a_token_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with caplog.at_level(logging.WARNING, "autoballoon.server"):
        load_token(token)
    assert caplog.text == ""
    token.chmod(0o644)
    with caplog.at_level(logging.WARNING, "autoballoon.server"):
        assert load_token(token) == TOKEN.encode()
    assert "every user" in caplog.text and "chmod 600" in caplog.text


# -- pathological JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "field", "says"),
    [
        ("vms/web/target", b"[" * 30_000 + b"]" * 30_000, "body", "nested too deep"),
        ("vms/web/target", b'{"target_bytes": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "body", "nested"),
        ("vms/web/target", b'{"target_bytes": ' + b"9" * 5_000 + b"}", "target_bytes", "5000-digit"),
        ("vms/db/policy", b'{"shares": ' + b"7" * 5_000 + b"}", "shares", "5000-digit"),
        ("vms/db/policy", b'{"shares": -' + b"7" * 5_000 + b"}", "shares", "5000-digit"),
        ("vms/web/target", b'{"target_bytes": "' + b"9" * 5_000 + b'"}', "target_bytes", "characters"),
        ("vms/db/policy", b'{"buffer": NaN}', "body", "NaN"),
        ("vms/db/policy", b'{"buffer": 1e999}', "buffer", "fraction"),
        ("vms/db/policy", b'{"buffer": [[[[1]]]]}', "buffer", "a JSON array"),
    ],
)
def test_pathological_json_is_a_400_naming_the_field_and_changes_nothing(
    server: RunningServer, source: FakeSource, path: str, raw: bytes, field: str, says: str
) -> None:
    before = source.view()
    status, body, _ = call(f"{server.url}api/v1/{path}", "POST", raw=raw, token=TOKEN)
    assert status == 400, body
    assert body["error"]["field"] == field
    assert says in body["error"]["message"]
    assert len(body["error"]["message"]) < 500
    assert source.submitted == [] and source.view() is before
