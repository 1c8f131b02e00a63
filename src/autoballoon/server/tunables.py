"""Every number the HTTP server, its history and its dashboard run on, in one frozen place.

None of these change what the controller does; they bound what serving the daemon's state may cost (memory
for history, bytes per request, threads per client) so that an operator's dashboard can never slow down
ballooning.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9180


@dataclass(frozen=True, slots=True)
class ServerTunables:
    """Limits and periods of the server. Override with ``dataclasses.replace``."""

    #: Real seconds between two looks at the controller's status for the history. Cheap: it copies a few
    #: numbers per VM and only when the controller has ticked since the last look.
    sample_interval_s: float = 0.5
    #: Points kept per VM for the dashboard's charts (about the last minutes at one point per tick).
    history_points: int = 240
    #: The charts' longer windows (1 h, 6 h) read a coarse history: a point per VM every this many
    #: seconds of the controller's clock, this many kept (6 h), in a fixed array of floats per VM (14 KiB:
    #: tuples of Python ints would cost a 1,000-VM daemon about 70 MiB more).
    coarse_period_s: float = 60.0
    coarse_points: int = 360
    #: A chart window up to this many seconds is drawn from the fine history, a longer one from the coarse.
    fine_window_s: float = 600.0
    #: The longest chart window the page may ask for.
    max_window_s: float = 21600.0
    #: Actions shown on the dashboard.
    dashboard_actions: int = 15
    #: ``/api/v1/events``: page size when ``limit`` is not given, and the largest page served.
    events_default_limit: int = 50
    events_max_limit: int = 1000
    #: Largest request body accepted (a policy or target change is a few dozen bytes).
    max_body_bytes: int = 64 * 1024
    #: Seconds a client may take to send one whole request (head and body), counted from its first byte
    #: or from the connection's opening; a slower one is disconnected, so it cannot hold a slot.
    request_timeout_s: float = 10.0
    #: Seconds an idle keep-alive connection is kept between two requests (a dashboard polls every 1 s).
    keep_alive_s: int = 5
    #: Connections queued by the kernel before the server accepts them (the stdlib server's 5 refused
    #: connections as soon as a few dashboards and a scraper arrived together).
    listen_backlog: int = 128
    #: Open connections served at once; beyond this a new request is answered 503 at once.
    max_connections: int = 256
    #: Seconds a 503 tells the client to wait before it asks again (``Retry-After``): at the connection
    #: limit, or before the controller's first look at the host (a tick is a few seconds at most).
    retry_after_s: int = 1
    #: Seconds ``stop()`` lets requests in flight finish before it closes their connections.
    shutdown_grace_s: int = 2
    #: Seconds ``start()`` waits for the server to listen before it gives up.
    start_wait_s: float = 10.0
    #: Seconds a POST waits for the controller to carry out a submitted change before answering 202.
    submit_wait_s: float = 5.0
    #: When the controller's ``on_tick`` is not wired to the server, how long one ``status()`` is reused.
    view_ttl_s: float = 0.1
    #: Journal entries taken from the controller per view (its ring keeps 1000 by default).
    journal_entries: int = 1000
    #: Seconds one rendering of ``/metrics`` may be served again although the daemon ticked since: a
    #: scraper's view is seconds old by design, and a scrape of 1,000 VMs costs a tenth of a second.
    metrics_reuse_s: float = 1.0
    #: Dashboard renderings kept per state, one per ``since`` asked for: pages in step ask for the same
    #: one or two (a first load, then the last poll's ``history_until``); a client sending others gets
    #: them rendered, but cannot make the server keep them all.
    dashboard_slices_kept: int = 8
    #: How often the page polls the server (milliseconds, handed to the page in its data).
    dashboard_poll_ms: int = 1000


TUNABLES = ServerTunables()
