"""The serving layer: uvicorn on a socket of its own, in a thread, with the deadlines and the connection
limit the daemon needs.

uvicorn parses HTTP/1.1 (through h11) and runs the ASGI application (:mod:`autoballoon.server.app`);
this module adds, at the protocol level where only it can be done:

- **How long a client may take.** A request's head and body must arrive within ``request_timeout_s`` of
  its first byte (or of the connection's opening), and a TLS handshake within the same time: a client
  that trickles headers cannot hold a slot.
- **How many it serves.** Beyond the connection limit a request is answered 503 in the API's JSON error
  form, as any other refusal, not with uvicorn's bare text page.
- **What a request h11 cannot parse gets.** A JSON 400, then the connection is closed.

These reach into uvicorn's h11 protocol class (``uvicorn.protocols.http.h11_impl``), which is not a
public API: ``pyproject.toml`` bounds uvicorn to the versions it was tried with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from autoballoon.errors import AutoballoonError
from autoballoon.server.api import JSON, ApiError
from autoballoon.server.app import ASGIApp, Receive, Scope, Send, security_headers
from autoballoon.server.listen import Tls
from autoballoon.server.tunables import TUNABLES, ServerTunables

log = logging.getLogger("autoballoon.server")

#: How often ``start()`` looks whether uvicorn listens yet.
START_POLL_S = 0.01


class DeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on reading each request, a connection limit answered
    like any other API error, and JSON protocol errors.

    uvicorn closes a connection idle between requests (``timeout_keep_alive``) but waits for ever on one
    that opened and sent nothing, or trickles its headers or body. Here the whole request must arrive
    within ``deadline_s`` of its first byte (or of the connection's opening); otherwise the connection is
    closed. Beyond ``max_connections`` open connections (or requests in flight) a request is answered 503
    with a JSON error, ``Retry-After`` and the security headers: uvicorn's own ``limit_concurrency`` answers
    a bare ``text/plain`` page, so it is off and the limit is kept here. Set them on a subclass
    (:func:`protocol_for`).
    """

    deadline_s: float = TUNABLES.request_timeout_s
    max_connections: int | None = None
    retry_after_s: int = TUNABLES.retry_after_s
    #: Whether the last request of this server was refused at the limit: a flood is logged once, when it
    #: starts, not once per refused request (kept on the per-server subclass, shared by its connections).
    refusing: bool = False

    # uvicorn's own signature (config, server_state, app_state, loop).
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.max_connections is not None:
            self.app = self._within_limit(self.app, self.max_connections)

    def _within_limit(self, app: ASGIApp, limit: int) -> ASGIApp:
        """``app``, or the 503 when more than ``limit`` connections are open or requests in flight (the
        request asking is counted in both)."""
        busy = security_headers(
            ApiError(
                503,
                f"the daemon is serving its limit of {limit} connections; retry in a moment",
                None,
                **{"Retry-After": str(self.retry_after_s)},
            ).response()
        )
        protocol = type(self)

        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            if len(self.connections) > limit or len(self.tasks) > limit:
                if not protocol.refusing:
                    log.warning("refusing requests (503): over %d open connections", limit)
                protocol.refusing = True
                await busy(scope, receive, send)
                return
            protocol.refusing = False
            await app(scope, receive, send)

        return limited

    # uvicorn's own signature: asyncio's stream servers always pass a Transport, not a BaseTransport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as H11Protocol
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if getattr(self, "_deadline", None) is None:
            self._deadline = self.loop.call_later(self.deadline_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            log.debug("closing a connection that took over %g s to send its request", self.deadline_s)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the whole request is in

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: answered in the API's JSON error form, then closed."""
        body = json.dumps({"error": {"status": 400, "message": msg, "field": "request"}}).encode()
        headers = [
            (b"content-type", JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        head = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
        self.transport.write(self.conn.send(head))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


def protocol_for(tunables: ServerTunables) -> type[DeadlineProtocol]:
    """A :class:`DeadlineProtocol` for one server's deadline and connection limit (uvicorn builds
    protocols from a class)."""
    fields = {
        "deadline_s": tunables.request_timeout_s,
        "max_connections": tunables.max_connections,
        "retry_after_s": tunables.retry_after_s,
    }
    return type("DeadlineProtocol", (DeadlineProtocol,), fields)


class _HandshakeDeadlineLoop(asyncio.SelectorEventLoop):
    """An event loop whose TLS servers drop a client that has not finished its handshake within
    ``handshake_s``. uvicorn passes no ``ssl_handshake_timeout``, so asyncio's default (60 s) held a
    connection that never handshakes six times as long as the request deadline, which only starts once
    the handshake is done."""

    handshake_s: float = TUNABLES.request_timeout_s

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        """asyncio's own, with the handshake deadline when serving TLS and none is given."""
        if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
            kwargs["ssl_handshake_timeout"] = self.handshake_s
        return await super().create_server(*args, **kwargs)


class _Config(uvicorn.Config):
    """uvicorn's settings, served on a :class:`_HandshakeDeadlineLoop` with ``handshake_s``."""

    handshake_s: float = TUNABLES.request_timeout_s

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        seconds = self.handshake_s

        def factory() -> asyncio.AbstractEventLoop:
            loop = _HandshakeDeadlineLoop()
            loop.handshake_s = seconds
            return loop

        return factory


class HttpServer:
    """uvicorn serving ``app`` from a thread of its own; ``stop()`` returns once it has shut down.

    The socket is bound here, before uvicorn starts, so that an address already in use is an ordinary
    ``OSError`` for the caller (uvicorn itself would log and exit the thread).
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        tunables: ServerTunables,
        *,
        tls: Tls | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.tls = tls
        config = _Config(
            app,
            http=protocol_for(tunables),
            ws="none",
            lifespan="off",
            loop="asyncio",
            backlog=tunables.listen_backlog,
            timeout_keep_alive=tunables.keep_alive_s,
            timeout_graceful_shutdown=tunables.shutdown_grace_s,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
        )
        config.handshake_s = tunables.request_timeout_s  # the documented deadline, handshake included
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="autoballoon-http", daemon=True
        )
        self._start_wait_s = tunables.start_wait_s

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self.tls else "http"
        return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + self._start_wait_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise AutoballoonError(f"the HTTP server on {self.url} did not start")
            time.sleep(START_POLL_S)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()
