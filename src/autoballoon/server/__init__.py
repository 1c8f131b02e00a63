"""The daemon's HTTP face: Prometheus ``/metrics``, the JSON API under ``/api/v1/`` and the dashboard.

Read-only unless started with a token. It reads the controller's state through
:class:`~autoballoon.server.source.Source` and never touches a backend itself.
"""

from __future__ import annotations

from autoballoon.server.api import Api
from autoballoon.server.history import History, Sampler
from autoballoon.server.http import HttpApp, HttpServer, parse_listen
from autoballoon.server.metrics import make_registry
from autoballoon.server.source import ServerView, Source, TickStats
from autoballoon.server.tunables import TUNABLES, ServerTunables


class RunningServer:
    """The HTTP server and its history sampler, started together and stopped together."""

    def __init__(
        self,
        source: Source,
        host: str,
        port: int,
        *,
        token: bytes | None = None,
        tunables: ServerTunables = TUNABLES,
    ) -> None:
        self.history = History(tunables.history_points)
        self.sampler = Sampler(self.history, lambda: source.view().snapshot, tunables.sample_interval_s)
        api = Api(source, self.history, tunables, token)
        app = HttpApp(api, make_registry(source.view, self.history), tunables)
        self.http = HttpServer(app, host, port)

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> RunningServer:
        self.sampler.start()
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()
        self.sampler.stop()


def serve(
    source: Source,
    listen: str = "127.0.0.1:9180",
    *,
    token: bytes | None = None,
    tunables: ServerTunables = TUNABLES,
) -> RunningServer:
    """Start serving ``source`` on ``listen`` (HOST:PORT); port 0 picks a free one (see ``.url``)."""
    host, port = parse_listen(listen)
    return RunningServer(source, host, port, token=token, tunables=tunables).start()


__all__ = ["RunningServer", "ServerTunables", "ServerView", "Source", "TickStats", "serve"]
