"""A small client for the running daemon's JSON API, for commands that ask the daemon rather than libvirt.

``list`` reads each VM's status from the daemon when one runs for the same hypervisor URI (only the daemon
knows that a guest is stuck, quarantined or on manual hold); ``release`` asks it to end a quarantine. The
daemon is found at ``--daemon URL``, else ``$AUTOBALLOON_DAEMON``, else the address ``autoballoon run``
listens on by default. Only the standard library: a CLI call must not pull in an HTTP stack.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import click

from autoballoon.cli.output import say
from autoballoon.errors import AutoballoonError, InvalidValueError
from autoballoon.server.tunables import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DEFAULT_DAEMON = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DAEMON_ENV = "AUTOBALLOON_DAEMON"
#: Seconds to wait for the daemon's whole answer: it answers from memory, so a slow answer means nobody
#: is there (or something that trickles bytes to hold the command).
READ_TIMEOUT_S = 2.0
#: ... but a change waits for the daemon's next tick (the server waits up to its submit_wait_s).
CHANGE_TIMEOUT_S = 15.0
#: The largest answer read: the VM list of a 1,000-VM daemon is under a megabyte.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

daemon_option = click.option(
    "--daemon",
    "daemon_url",
    metavar="URL",
    envvar=DAEMON_ENV,
    default=DEFAULT_DAEMON,
    show_default=True,
    help=f"The running daemon's HTTP address (also ${DAEMON_ENV}).",
)


class DaemonUnreachable(AutoballoonError):
    """No daemon answered at the address (not running, or serving no HTTP, or not in time)."""


class DaemonRefused(AutoballoonError):
    """The daemon answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.exit_code = 2 if 400 <= status < 500 else 1
        super().__init__(message)


class DaemonGarbled(AutoballoonError):
    """Something answered at the address, but not what the daemon's API answers."""


# -- one request, bounded in total time ---------------------------------------------------------------


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the whole answer did not arrive in time")
    return left


class _DeadlineSocket(socket.socket):
    """A socket whose every read waits only for what is left of one deadline: a per-read timeout alone
    lets an answer trickled a byte at a time hold the command for ever."""

    deadline = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineTlsSocket(ssl.SSLSocket):
    """The same for HTTPS (``ssl`` reads the descriptor itself, so its socket class is replaced)."""

    deadline = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _Http(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, deadline: float) -> None:
        super().__init__(host, port, timeout=_left(deadline))
        self.deadline = deadline

    def connect(self) -> None:
        plain = socket.create_connection((self.host, self.port), _left(self.deadline))
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline = self.deadline
        self.sock = sock


class _Https(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, deadline: float) -> None:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineTlsSocket
        super().__init__(host, port, timeout=_left(deadline), context=context)
        self.deadline = deadline

    def connect(self) -> None:
        super().connect()  # ssl bounds the whole handshake by the timeout (one deadline per call)
        if isinstance(self.sock, _DeadlineTlsSocket):
            self.sock.deadline = self.deadline


def _base(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise InvalidValueError("daemon address", url, "an http:// or https:// URL, e.g. " + DEFAULT_DAEMON)
    return parts


def _parse(raw: bytes) -> Any:
    """JSON, or ValueError: also for nesting too deep for the parser (a RecursionError otherwise)."""
    try:
        return json.loads(raw or b"null")
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def _exchange(
    url: str, method: str, path: str, data: bytes | None, headers: dict[str, str], timeout_s: float
) -> tuple[int, str, bytes]:
    """One request on a fresh connection: (status, reason, body), all of it within ``timeout_s``."""
    parts = _base(url)
    deadline = time.monotonic() + timeout_s
    kind = _Https if parts.scheme == "https" else _Http
    conn = kind(parts.hostname or "", parts.port, deadline)
    try:
        conn.request(method, f"{parts.path.rstrip('/')}/api/v1/{path}", body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read(MAX_ANSWER_BYTES + 1)
    finally:
        conn.close()
    return resp.status, resp.reason, raw


def request(
    url: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    token: bytes | None = None,
) -> Any:
    """GET (or POST ``body``) ``/api/v1/<path>`` on the daemon; its JSON answer, or an error naming why.

    The whole answer must arrive within the timeout, and be JSON the parser can take; anything else is
    :class:`DaemonUnreachable` or :class:`DaemonGarbled`, never a traceback or a hang."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = "Bearer " + token.decode("utf-8")
    timeout = READ_TIMEOUT_S if body is None else CHANGE_TIMEOUT_S
    try:
        status, reason, raw = _exchange(url, "GET" if body is None else "POST", path, data, headers, timeout)
    except TimeoutError:
        raise DaemonUnreachable(f"no autoballoon daemon answered at {url} within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as e:
        why = str(e) or type(e).__name__
        raise DaemonUnreachable(f"no autoballoon daemon answers at {url} ({why})") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise DaemonGarbled(f"the answer at {url} to /api/v1/{path} is over {MAX_ANSWER_BYTES} bytes")
    if status >= 400:
        try:
            message = str(_parse(raw)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {status} {reason}"
        raise DaemonRefused(status, f"the daemon at {url} refused: {message}")
    try:
        return _parse(raw)
    except ValueError as e:
        raise DaemonGarbled(f"the answer at {url} to /api/v1/{path} is not JSON ({e})") from None


# -- what the commands read from the answers ------------------------------------------------------------


def _status_rows(rows: Any) -> dict[str, tuple[str, str]]:
    """``/vms`` as ``{name: (status, status_reason)}``; ValueError naming what is wrong with it."""
    if not isinstance(rows, list):
        raise ValueError(f"a JSON {type(rows).__name__}, not a list of VMs")
    known = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ValueError("a row without a name")
        status, reason = row.get("status"), row.get("status_reason")
        if not isinstance(status, str | None) or not isinstance(reason, str | None):
            raise ValueError(f"VM {row['name']!r} with a status that is not text")
        if status:
            known[row["name"]] = (status, reason or "")
    return known


def statuses(url: str, uri: str) -> dict[str, tuple[str, str]] | None:
    """Each VM's ``(status, status_reason)`` from the daemon managing ``uri``; None when no daemon runs
    there, or it manages another hypervisor, or its answer makes no sense (said on stderr: the listing
    then shows what the snapshot alone says)."""
    try:
        host = request(url, "host")
        if not isinstance(host, dict) or host.get("uri") != uri:
            return None
        return _status_rows(request(url, "vms"))
    except (DaemonUnreachable, DaemonRefused):
        return None
    except (DaemonGarbled, ValueError) as e:
        why = e if isinstance(e, DaemonGarbled) else f"the VM list at {url} is {e}"
        say(f"autoballoon: warning: {why}; STATUS shows what the snapshot alone says", err=True)
        return None


def applied(answer: Any, url: str) -> bool:
    """Whether a change's answer says it was carried out (``applied``); DaemonGarbled if it says neither."""
    done = answer.get("applied") if isinstance(answer, dict) else None
    if not isinstance(done, bool):
        raise DaemonGarbled(f"the daemon at {url} answered the change without saying whether it applied it")
    return done
