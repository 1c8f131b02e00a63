"""The socket side: a small threaded HTTP server in front of :class:`~autoballoon.server.api.Api`.

stdlib ``ThreadingHTTPServer`` is enough: a handful of operators and one Prometheus, every answer rendered
at most once per tick. Each request gets a daemon thread with a read timeout, a bounded body, and security
headers that keep the dashboard to its own origin (no CDN, no inline script, nothing framed).
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from autoballoon.errors import InvalidValueError
from autoballoon.server.api import PREFIX, Api, ApiError, Request, Response
from autoballoon.server.tunables import DEFAULT_HOST, DEFAULT_PORT, ServerTunables

log = logging.getLogger("autoballoon.server")

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
)
LISTEN_FORMS = "HOST:PORT, like 127.0.0.1:9180, [::1]:9180 or :9180 (127.0.0.1)"


def parse_listen(text: str) -> tuple[str, int]:
    """``--listen``'s value as (host, port); a missing host is 127.0.0.1, never every interface."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not (0 <= int(port_text) <= 65535):
        raise InvalidValueError("--listen address", text, LISTEN_FORMS)
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port_text)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The dashboard's files, read once from the package: URL path -> (bytes, content type)."""
    files: dict[str, tuple[bytes, str]] = {}
    root = resources.files("autoballoon.server") / "static"

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1]
            if suffix in STATIC_TYPES:
                files[f"/{prefix}{child.name}"] = (child.read_bytes(), STATIC_TYPES[suffix])

    walk(root, "")
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, app: HttpApp) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, _Handler)


class HttpApp:
    """Everything a request needs: the API, the metrics registry, the static files, the limits."""

    def __init__(self, api: Api, registry: CollectorRegistry, tunables: ServerTunables) -> None:
        self.api = api
        self.registry = registry
        self.tunables = tunables
        self.static = load_static()

    def respond(self, req: Request) -> Response:
        if req.path.startswith(PREFIX):
            return self.api.handle(req)
        if req.method not in ("GET", "HEAD"):
            return ApiError(
                405, f"{req.method} is not allowed on {req.path}", "method", Allow="GET"
            ).response()
        if req.path == "/metrics":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if req.path == "/healthz":
            return Response(200, b"ok\n", STATIC_TYPES[".txt"])
        found = self.static.get(req.path)
        if found is None:
            return ApiError(404, f"no such page {req.path!r}", "path").response()
        return Response(200, found[0], found[1], (("Cache-Control", "no-cache"),))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "autoballoon"
    sys_version = ""
    error_content_type = "application/json"
    error_message_format = '{"error": {"status": %(code)d, "message": "%(message)s", "field": null}}'
    timeout: ClassVar[float | None] = None  # set per server from the tunables in setup()

    def setup(self) -> None:
        self.timeout = self.server.app.tunables.request_timeout_s
        super().setup()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        length_text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > app.tunables.max_body_bytes:
            limit = app.tunables.max_body_bytes
            resp = ApiError(413, f"request body must be 0 to {limit} bytes", "body").response()
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            req = Request(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                resp = app.respond(req)
            except Exception:  # a bug must cost one request, never the server
                log.exception("error serving %s %s", self.command, self.path)
                resp = ApiError(500, "internal error; see the daemon's log").response()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        if resp.content_type.startswith("application/json"):
            self.send_header("Cache-Control", "no-store")
        for name, value in (*SECURITY_HEADERS, *resp.headers):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = _serve
    do_HEAD = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve


class HttpServer:
    """A started server; ``stop()`` closes the socket and returns once the accept loop has ended."""

    def __init__(self, app: HttpApp, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, port), family, app)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="autoballoon-http",
            kwargs={"poll_interval": app.tunables.shutdown_poll_s},
        )
        self._thread.daemon = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
