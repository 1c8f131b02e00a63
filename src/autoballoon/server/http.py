"""The socket side: the ASGI application (FastAPI) and the uvicorn server it runs on.

A well-kept HTTP stack parses requests (percent-decoded paths, chunked bodies, pipelining) so that this
module only adds what the daemon needs on top:

- **Where it listens.** Loopback unless told otherwise; an address other machines can reach needs TLS
  (``--tls-cert``/``--tls-key``) or an explicit ``--insecure-listen``, because the API token would
  otherwise cross the network in clear.
- **Who it answers.** The ``Host`` header must name the listen address, ``localhost`` (on loopback) or a
  name the operator allows (``--allow-host``): a DNS-rebinding page, whose requests carry its own host
  name, cannot read the API even though the browser reaches 127.0.0.1.
- **How long a client may take.** A request's head and body must arrive within ``request_timeout_s`` of
  its first byte (or of the connection's opening): a client that trickles headers cannot hold a slot.
- **What every answer looks like.** Errors are JSON naming the field at fault, the stack's own included;
  security headers keep the dashboard to its own origin (no CDN, no inline script, nothing framed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from autoballoon.errors import AutoballoonError, InvalidValueError
from autoballoon.server.api import JSON, PREFIX, Api, ApiError, api_router, error_of
from autoballoon.server.renders import Renders
from autoballoon.server.tunables import DEFAULT_HOST, ServerTunables
from autoballoon.text import printable

log = logging.getLogger("autoballoon.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
)
#: How often ``start()`` looks whether uvicorn listens yet.
START_POLL_S = 0.01
LISTEN_FORMS = "HOST:PORT, like 127.0.0.1:9180, [::1]:9180 or :9180 (127.0.0.1)"
EXPOSED_FORMS = (
    "a loopback address such as 127.0.0.1:9180; to listen on other interfaces add --tls-cert FILE "
    "--tls-key FILE (the API token then travels encrypted), or --insecure-listen to accept that it "
    "travels in clear"
)


# -- where it listens ----------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``--listen``'s value as (host, port); a missing host is 127.0.0.1, never every interface."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()) or not (0 <= int(port_text) <= 65535):
        raise InvalidValueError("--listen address", text, LISTEN_FORMS)
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port_text)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: a loopback address, or the name ``localhost``."""
    ip = _ip(host)
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


# -- who it answers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """The ``Host`` header values the daemon answers to: its listen address, ``localhost`` when that is
    loopback (or every interface), any IP literal when it listens on every interface (a rebinding page
    always comes with a *name*), and the names the operator lists with ``--allow-host``."""

    listen_host: str
    names: frozenset[str] = frozenset()

    @staticmethod
    def hostname(header: str) -> str:
        """The host part of a Host header (``name:port``, ``[v6]:port``), lower-case, no final dot."""
        header = header.strip()
        if header.startswith("["):
            name = header[1 : header.find("]")] if "]" in header else header[1:]
        else:
            name, sep, port = header.rpartition(":")
            if not sep or not (port.isascii() and port.isdigit()):
                name = header
        return name.lower().rstrip(".")

    def accepts(self, header: str | None) -> bool:
        if header is None:  # HTTP/1.0 without Host: no browser sends that, so no rebinding either
            return True
        name = self.hostname(header)
        listen = self.listen_host.lower()
        listen_ip = _ip(listen)
        every = self.every_interface
        ip = _ip(name)
        if ip is not None:
            return every or ip == listen_ip or (ip.is_loopback and is_loopback(listen))
        if name == "localhost" and (every or is_loopback(listen)):
            return True
        return name == listen or name in self.names

    @property
    def every_interface(self) -> bool:
        ip = _ip(self.listen_host)
        return ip is not None and ip.is_unspecified

    def describe(self) -> str:
        shown = [self.listen_host]
        if self.every_interface:
            shown.append("any IP address")
        if self.every_interface or is_loopback(self.listen_host):
            shown.append("localhost")
        return ", ".join([*shown, *sorted(self.names)])


def host_check(app: ASGIApp, allowed: AllowedHosts) -> ASGIApp:
    """ASGI middleware: 421 (JSON, naming the Host header) for a Host the daemon does not answer to."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            if not allowed.accepts(header):
                refusal = ApiError(
                    421,
                    f"this daemon does not answer to Host {header!r}; accepted: {allowed.describe()} "
                    "(start it with --allow-host NAME to add a name)",
                    "Host",
                )
                await refusal.response()(scope, receive, send)
                return
        await app(scope, receive, send)

    return middleware


def security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: the security headers on every answer, ``no-store`` on JSON ones."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if any(k == b"content-type" and v.startswith(JSON.encode()) for k, v in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, with_headers if scope["type"] == "http" else send)

    return middleware


# -- the application -----------------------------------------------------------------------------------


def load_static() -> dict[str, tuple[bytes, str]]:
    """The dashboard's files, read once from the package: URL path -> (bytes, content type)."""
    files: dict[str, tuple[bytes, str]] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1]
            if suffix in STATIC_TYPES:
                files[f"/{prefix}{child.name}"] = (child.read_bytes(), STATIC_TYPES[suffix])

    walk(resources.files("autoballoon.server") / "static", "")
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def create_app(api: Api, registry: CollectorRegistry, allowed: AllowedHosts) -> ASGIApp:
    """The whole HTTP face: ``/api/v1/`` (with its OpenAPI description), ``/metrics``, ``/healthz`` and
    the dashboard's files, behind the Host check and the security headers."""
    deadline_s = api.tun.request_timeout_s
    app = FastAPI(
        title="autoballoon",
        summary="The autoballoon daemon's JSON API",
        version="1",
        openapi_url=PREFIX + "/openapi.json",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: the daemon makes no external requests
        redoc_url=None,
    )
    app.include_router(api_router(api))

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, e: ApiError) -> Response:
        return e.response()

    @app.exception_handler(AutoballoonError)
    async def on_our_error(request: Request, e: AutoballoonError) -> Response:
        return error_of(e).response()

    @app.exception_handler(RequestValidationError)
    async def on_bad_parameter(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        where = first.get("loc", ())
        field = str(where[-1]) if where else None
        value = request.query_params.get(field) if field else None
        shown = f" {value!r}" if value is not None else ""
        message = f"invalid {field}{shown}: {first.get('msg', 'not accepted')}"
        return ApiError(400, message, field).response()

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, e: HTTPException) -> Response:
        if e.status_code == 404:
            return ApiError(404, f"no such endpoint {request.url.path!r}", "path").response()
        if e.status_code == 405:
            allow = (e.headers or {}).get("Allow", "GET")
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
            return ApiError(405, message, "method", Allow=allow).response()
        return ApiError(e.status_code, str(e.detail), None, **(e.headers or {})).response()

    @app.exception_handler(ClientDisconnect)
    async def on_gone(request: Request, e: ClientDisconnect) -> Response:
        # Not a bug: the client hung up, or the deadline cut off a body that came too slowly. One line
        # at INFO, not a traceback from us and another from uvicorn; the answer goes nowhere.
        client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        log.info(
            "client %s hung up before sending the whole body of %s %s (it went away, or took over %g s "
            "and was cut off)",
            client,
            printable(request.method),
            printable(request.url.path),
            deadline_s,
        )
        return ApiError(400, "the connection closed before the request body arrived", "body").response()

    @app.exception_handler(Exception)
    async def on_bug(request: Request, e: Exception) -> Response:  # a bug costs one request, never the server
        log.exception("error serving %s %s", printable(request.method), printable(request.url.path))
        return ApiError(500, "internal error; see the daemon's log").response()

    scrapes = Renders()

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        # One rendering per state of the daemon, reused for at most metrics_reuse_s: a scrape of 1,000
        # VMs costs a tenth of a second, and a scraper's view is seconds old by design anyway.
        view = api.source.view()
        version = (id(view), api.history.version)
        body = scrapes.get(
            "metrics", version, lambda: generate_latest(registry), max_age_s=api.tun.metrics_reuse_s
        )
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response(b"ok\n", media_type=STATIC_TYPES[".txt"])

    def page(path: str, content: bytes, media_type: str) -> None:
        @app.get(path, include_in_schema=False)
        def serve_file() -> Response:
            return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

    for path, (content, media_type) in load_static().items():  # one route per file: nothing else is served
        page(path, content, media_type)

    return host_check(security_headers(app), allowed)


# -- the server ----------------------------------------------------------------------------------------


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

    deadline_s: float = 10.0
    max_connections: int | None = None
    retry_after_s: int = 1
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

    handshake_s: float = 10.0

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        """asyncio's own, with the handshake deadline when serving TLS and none is given."""
        if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
            kwargs["ssl_handshake_timeout"] = self.handshake_s
        return await super().create_server(*args, **kwargs)


class _Config(uvicorn.Config):
    """uvicorn's settings, served on a :class:`_HandshakeDeadlineLoop` with ``handshake_s``."""

    handshake_s: float = 10.0

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
