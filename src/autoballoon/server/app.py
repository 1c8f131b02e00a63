"""The ASGI application: the API, ``/metrics``, ``/healthz`` and the dashboard's files, behind the Host
allow-list and the security headers.

A well-kept HTTP stack (FastAPI on Starlette) parses requests, so that this module only adds what the
daemon needs on top:

- **Who it answers.** The ``Host`` header must name the listen address, ``localhost`` (on loopback) or a
  name the operator allows (``--allow-host``): a DNS-rebinding page, whose requests carry its own host
  name, cannot read the API even though the browser reaches 127.0.0.1.
- **What every answer looks like.** Errors are JSON naming the field at fault, the stack's own included;
  security headers keep the dashboard to its own origin (no CDN, no inline script, nothing framed).
- **What files it serves.** The dashboard's, read once from the package, one route each: nothing else
  on disk can be reached.

The socket, the connection limits and the deadlines are :mod:`autoballoon.server.serving`'s.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from autoballoon.errors import AutoballoonError
from autoballoon.server import payload
from autoballoon.server.api import JSON, PREFIX, Api, ApiError, api_router, error_of
from autoballoon.server.listen import ip_of, is_loopback
from autoballoon.server.renders import Renders
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


# -- who it answers ------------------------------------------------------------------------------------


def own_names() -> tuple[str, ...]:
    """This machine's own names (its host name and fully qualified name): what a Prometheus on the
    network scrapes it by. A DNS-rebinding page comes with a name its author controls, never these, so
    a daemon listening beyond loopback answers to them without ``--allow-host`` (which a scrape by
    host name otherwise needed, getting 421)."""
    name = socket.gethostname()
    return (name, socket.getfqdn(name))


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """The ``Host`` header values the daemon answers to: its listen address, ``localhost`` when that is
    loopback (or every interface), any IP literal when it listens on every interface (a rebinding page
    always comes with a *name*), and the names the operator lists with ``--allow-host``."""

    listen_host: str
    names: frozenset[str] = frozenset()

    @classmethod
    def serving(cls, listen_host: str, allow_hosts: Iterable[str] = ()) -> AllowedHosts:
        """What a daemon listening on ``listen_host`` answers to: the names given (``--allow-host``) and,
        beyond loopback, this machine's own names (:func:`own_names`)."""
        names = [*allow_hosts, *([] if is_loopback(listen_host) else own_names())]
        return cls(listen_host, frozenset(n.lower().rstrip(".") for n in names if n))

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
        listen_ip = ip_of(listen)
        every = self.every_interface
        ip = ip_of(name)
        if ip is not None:
            return every or ip == listen_ip or (ip.is_loopback and is_loopback(listen))
        if name == "localhost" and (every or is_loopback(listen)):
            return True
        return name == listen or name in self.names

    @property
    def every_interface(self) -> bool:
        ip = ip_of(self.listen_host)
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


class _Described(FastAPI):
    """FastAPI whose OpenAPI description also holds the request bodies' schemas. The change routes read
    their bodies themselves (see :mod:`autoballoon.server.api`), so FastAPI never sees the models: their
    routes refer to them under ``components/schemas``, and they are put there from
    :func:`autoballoon.server.payload.schemas`, generated from the models that parse the bodies."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            described = super().openapi()
            known = described.setdefault("components", {}).setdefault("schemas", {})
            _, bodies = payload.schemas()
            if clash := known.keys() & bodies.keys():  # pragma: no cover - a model named like FastAPI's own
                raise AssertionError(f"request body schemas named like FastAPI's own: {sorted(clash)}")
            known.update(bodies)
            self.openapi_schema = described
        return self.openapi_schema


def create_app(api: Api, registry: CollectorRegistry, allowed: AllowedHosts) -> ASGIApp:
    """The whole HTTP face: ``/api/v1/`` (with its OpenAPI description), ``/metrics``, ``/healthz`` and
    the dashboard's files, behind the Host check and the security headers."""
    app = _Described(
        title="autoballoon",
        summary="The autoballoon daemon's JSON API",
        version="1",
        openapi_url=PREFIX + "/openapi.json",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: the daemon makes no external requests
        redoc_url=None,
    )
    app.include_router(api_router(api))
    _answer_errors_as_json(app, api.tun.request_timeout_s)
    _plain_routes(app, api, registry)
    return host_check(security_headers(app), allowed)


def _answer_errors_as_json(app: FastAPI, deadline_s: float) -> None:
    """Every refusal and failure, FastAPI's and Starlette's own included, in the API's JSON error form
    naming the field at fault; ``deadline_s`` is the request deadline a cut-off body is logged with."""

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


def _plain_routes(app: FastAPI, api: Api, registry: CollectorRegistry) -> None:
    """The routes outside the JSON API: ``/metrics``, ``/healthz`` and one per dashboard file."""
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
