"""A small client for the running daemon's JSON API, for commands that ask the daemon rather than libvirt.

``list`` reads each VM's status from the daemon when one runs for the same hypervisor URI (only the daemon
knows that a guest is stuck, quarantined or on manual hold); ``release`` asks it to end a quarantine. The
daemon is found at ``--daemon URL``, else ``$AUTOBALLOON_DAEMON``, else the address ``autoballoon run``
listens on by default. Only the standard library: a CLI call must not pull in an HTTP stack.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from autoballoon.errors import AutoballoonError, InvalidValueError
from autoballoon.server.tunables import DEFAULT_HOST, DEFAULT_PORT

DEFAULT_DAEMON = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DAEMON_ENV = "AUTOBALLOON_DAEMON"
#: Seconds to wait for the daemon: it answers from memory, so a slow answer means nobody is there.
READ_TIMEOUT_S = 2.0
#: ... but a change waits for the daemon's next tick (the server waits up to its submit_wait_s).
CHANGE_TIMEOUT_S = 15.0

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
    """No daemon answered at the address (not running, or serving no HTTP)."""


class DaemonRefused(AutoballoonError):
    """The daemon answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.exit_code = 2 if 400 <= status < 500 else 1
        super().__init__(message)


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise InvalidValueError("daemon address", url, "an http:// or https:// URL, e.g. " + DEFAULT_DAEMON)
    return url.rstrip("/")


def request(
    url: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    token: bytes | None = None,
) -> Any:
    """GET (or POST ``body``) ``/api/v1/<path>`` on the daemon; its JSON answer, or an error naming why."""
    full = f"{_base(url)}/api/v1/{path}"
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = "Bearer " + token.decode("utf-8")
    req = urllib.request.Request(
        full, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        timeout = READ_TIMEOUT_S if body is None else CHANGE_TIMEOUT_S
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {e.code} {e.reason}"
        raise DaemonRefused(e.code, f"the daemon at {url} refused: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DaemonUnreachable(f"no autoballoon daemon answers at {url} ({reason})") from None


def statuses(url: str, uri: str) -> dict[str, tuple[str, str]] | None:
    """Each VM's ``(status, status_reason)`` from the daemon managing ``uri``; None when no daemon runs
    there, or it manages another hypervisor."""
    try:
        host = request(url, "host")
        if not isinstance(host, dict) or host.get("uri") != uri:
            return None
        rows = request(url, "vms")
    except (DaemonUnreachable, DaemonRefused):
        return None
    return {
        str(r["name"]): (str(r.get("status") or ""), str(r.get("status_reason") or ""))
        for r in rows
        if isinstance(r, dict) and r.get("status")
    }
