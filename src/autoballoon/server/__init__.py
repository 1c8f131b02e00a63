"""The daemon's HTTP face: Prometheus ``/metrics``, the JSON API under ``/api/v1/`` and the dashboard.

Read-only unless started with a token. It reads the controller's state through
:class:`~autoballoon.server.source.Source` and never touches a backend itself.

Three layers, one module each: :mod:`~autoballoon.server.listen` decides where it may listen (the
address and the TLS rule), :mod:`~autoballoon.server.app` is the ASGI application (routes, the Host
allow-list, security headers, the dashboard's files), and :mod:`~autoballoon.server.serving` runs it
on uvicorn with the deadlines and the connection limit. This module wires them with the history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoballoon.errors import AutoballoonError
from autoballoon.server.api import Api
from autoballoon.server.app import AllowedHosts, create_app
from autoballoon.server.auth import load_token
from autoballoon.server.history import History, Sampler
from autoballoon.server.listen import Tls, check_exposure, parse_listen
from autoballoon.server.metrics import make_registry
from autoballoon.server.serving import HttpServer
from autoballoon.server.source import ServerView, Source
from autoballoon.server.tunables import DEFAULT_HOST, DEFAULT_PORT, TUNABLES, ServerTunables

if TYPE_CHECKING:
    from autoballoon.controller import Controller

DEFAULT_LISTEN = f"{DEFAULT_HOST}:{DEFAULT_PORT}"


class RunningServer:
    """The HTTP server and its history sampler, started together and stopped together."""

    def __init__(
        self,
        source: Source,
        host: str,
        port: int,
        *,
        token: bytes | None = None,
        allow_hosts: Iterable[str] = (),
        tls: Tls | None = None,
        tunables: ServerTunables = TUNABLES,
    ) -> None:
        self.history = History(tunables.history_points, tunables.coarse_points, tunables.coarse_period_s)
        self.sampler = Sampler(self.history, lambda: source.view().snapshot, tunables.sample_interval_s)
        registry = make_registry(source.view, self.history, tick_histogram=source.tick_histogram)
        allowed = AllowedHosts.serving(host, allow_hosts)
        app = create_app(Api(source, self.history, tunables, token), registry, allowed)
        self.http = HttpServer(app, host, port, tunables, tls=tls)
        self._source_on_tick: Callable[[Any], None] = getattr(source, "on_tick", lambda controller: None)

    @property
    def url(self) -> str:
        return self.http.url

    def on_tick(self, controller: Any = None) -> None:
        """Hand to ``Controller.run(on_tick=...)``: the view and the charts then follow every tick."""
        self._source_on_tick(controller)
        self.sampler.sample_once()

    def start(self) -> RunningServer:
        self.sampler.start()
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()
        self.sampler.stop()


def serve(
    source: Source,
    listen: str = DEFAULT_LISTEN,
    *,
    token: bytes | None = None,
    allow_hosts: Iterable[str] = (),
    tls: Tls | None = None,
    tunables: ServerTunables = TUNABLES,
) -> RunningServer:
    """Start serving ``source`` on ``listen`` (HOST:PORT); port 0 picks a free one (see ``.url``)."""
    host, port = parse_listen(listen)
    server = RunningServer(
        source, host, port, token=token, allow_hosts=allow_hosts, tls=tls, tunables=tunables
    )
    return server.start()


def check_listen(
    listen: str, *, token_file: str | Path | None, tls: Tls | None, insecure: bool
) -> tuple[str, int, bytes | None]:
    """Everything about serving that can be refused before the daemon starts: the address, whether it
    may be exposed beyond loopback, the TLS files and the token file. Returns (host, port, token)."""
    host, port = parse_listen(listen)
    check_exposure(host, port, tls=tls, insecure=insecure)
    if tls is not None:
        tls.check()
    token = load_token(token_file) if token_file is not None else None
    return host, port, token


def serve_controller(
    controller: Controller,
    listen: str = DEFAULT_LISTEN,
    *,
    token_file: str | Path | None = None,
    allow_hosts: Iterable[str] = (),
    tls: Tls | None = None,
    insecure: bool = False,
    tunables: ServerTunables = TUNABLES,
) -> RunningServer:
    """The daemon's server: ``autoballoon run`` starts this and passes ``.on_tick`` to the controller.

    A bad address, an exposed address without TLS or ``insecure``, bad TLS files or a bad token file are
    refused before anything listens; a port that cannot be bound is a run-time failure (exit 1) naming the
    address.
    """
    from autoballoon.server.controller_source import ControllerSource

    host, port, token = check_listen(listen, token_file=token_file, tls=tls, insecure=insecure)
    try:
        server = RunningServer(
            ControllerSource(controller, tunables),
            host,
            port,
            token=token,
            allow_hosts=allow_hosts,
            tls=tls,
            tunables=tunables,
        )
    except OSError as e:
        raise AutoballoonError(f"cannot listen on {listen}: {e.strerror or e}") from None
    return server.start()


__all__ = [
    "RunningServer",
    "ServerTunables",
    "ServerView",
    "Source",
    "Tls",
    "check_listen",
    "serve",
    "serve_controller",
]
