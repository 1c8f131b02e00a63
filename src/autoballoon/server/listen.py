"""Where the daemon listens, and on what terms: the ``--listen`` address and the TLS rule.

Loopback unless told otherwise. An address other machines can reach needs TLS (``--tls-cert``/
``--tls-key``) or an explicit ``--insecure-listen``, because the API token would otherwise cross the
network in clear. Everything here is checked before anything listens, so a refused address or a bad
certificate is a usage error, not a half-started daemon.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from autoballoon.errors import InvalidValueError
from autoballoon.server.tunables import DEFAULT_HOST

log = logging.getLogger("autoballoon.server")

#: The highest TCP port number.
MAX_PORT = 65535
LISTEN_FORMS = "HOST:PORT, like 127.0.0.1:9180, [::1]:9180 or :9180 (127.0.0.1)"
EXPOSED_FORMS = (
    "a loopback address such as 127.0.0.1:9180; to listen on other interfaces add --tls-cert FILE "
    "--tls-key FILE (the API token then travels encrypted), or --insecure-listen to accept that it "
    "travels in clear"
)


def parse_listen(text: str) -> tuple[str, int]:
    """``--listen``'s value as (host, port); a missing host is 127.0.0.1, never every interface."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()) or not (0 <= int(port_text) <= MAX_PORT):
        raise InvalidValueError("--listen address", text, LISTEN_FORMS)
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port_text)


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, or None for a name (names are compared as text)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: a loopback address, or the name ``localhost``."""
    ip = ip_of(host)
    return ip.is_loopback if ip is not None else host.lower().rstrip(".") == "localhost"


@dataclass(frozen=True, slots=True)
class Tls:
    """The certificate and key ``--tls-cert``/``--tls-key`` name (PEM files)."""

    cert: Path
    key: Path

    def check(self) -> None:
        """Load them once at start, so a bad pair is refused before anything listens."""
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            raise InvalidValueError(
                "--tls-cert/--tls-key", f"{self.cert}, {self.key}", f"a PEM certificate and its key ({e})"
            ) from None


def check_exposure(host: str, port: int, *, tls: Tls | None, insecure: bool) -> None:
    """Refuse to serve the token in clear beyond this machine unless the operator said so."""
    if is_loopback(host) or tls is not None:
        return
    if not insecure:
        raise InvalidValueError("--listen address", f"{host}:{port}", EXPOSED_FORMS)
    log.warning(
        "listening on %s:%d without TLS (--insecure-listen): the API token crosses the network in clear",
        host,
        port,
    )
