"""``autoballoon fleet --prometheus URL``: every host's daemon in one table, read from Prometheus.

One daemon runs per host and Prometheus already scrapes them all (``contrib/prometheus/prometheus.yml``),
so this is a client of Prometheus's HTTP query API, not an aggregator of its own: every sum is a PromQL
query evaluated by Prometheus at one instant, on the daemons' own series (so it works with or without the
recording rules in ``contrib/prometheus/autoballoon.rules.yml``, which compute the same figures). Only the
standard library talks HTTP, as in :mod:`autoballoon.cli.daemon`: a CLI call must not pull in an HTTP stack.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import click

from autoballoon.cli import cli
from autoballoon.cli.output import emit_json, table
from autoballoon.errors import AutoballoonError, InvalidValueError
from autoballoon.model import Status
from autoballoon.units import human

PROMETHEUS_ENV = "AUTOBALLOON_PROMETHEUS"
#: Seconds to wait for one query: Prometheus answers these from its head block in milliseconds.
TIMEOUT_S = 10.0
#: The measure shown first and summed in the table (others, such as host RSS, follow it).
BALLOON = "balloon"
#: VM states in the order the table lists them.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

#: Liveness as the recording rule host:autoballoon_up:bool has it: the last tick, as of the last scrape,
#: at most three intervals old; a host seen in the last day that exports nothing now is down.
UP = """
max by (host) (
  timestamp(autoballoon_last_tick_timestamp_seconds) - autoballoon_last_tick_timestamp_seconds
  <= bool 3 * autoballoon_tick_interval_seconds
)
or
max by (host) (0 * last_over_time(autoballoon_tick_interval_seconds[1d]))
"""

#: One PromQL query per figure, each answered per host (``host``) or for the whole Prometheus (``fleet``).
HOST_QUERIES: Mapping[str, str] = {
    "up": UP,
    "reclaimed": "sum by (host, measure) (autoballoon_host_reclaimed_bytes)",
    "budget": "sum by (host) (autoballoon_host_budget_bytes)",
    "memory": "sum by (host) (autoballoon_host_memory_total_bytes)",
    "overcommit": "sum by (host) (autoballoon_host_vms_max_bytes)"
    " / sum by (host) (autoballoon_host_memory_total_bytes)",
    "short": "max by (host) (autoballoon_host_short)",
    "vms": "sum by (host, status) (autoballoon_host_vms)",
    "last_tick_age": "max by (host) (time() - last_over_time(autoballoon_last_tick_timestamp_seconds[1d]))",
}
FLEET_QUERIES: Mapping[str, str] = {
    "reclaimed": "sum by (measure) (autoballoon_host_reclaimed_bytes)",
    "budget": "sum(autoballoon_host_budget_bytes)",
    "memory": "sum(autoballoon_host_memory_total_bytes)",
    "overcommit": "sum(autoballoon_host_vms_max_bytes) / sum(autoballoon_host_memory_total_bytes)",
    "vms": "sum by (status) (autoballoon_host_vms)",
}

#: One query's answer: each series' labels and its value.
Samples = list[tuple[dict[str, str], float]]


class PrometheusError(AutoballoonError):
    """Prometheus could not be reached or did not answer as its query API does (exit 1)."""


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host as Prometheus sees it; figures are None while its daemon exports nothing (down)."""

    host: str
    up: bool
    short: bool | None
    reclaimed_bytes: dict[str, int]
    budget_bytes: int | None
    memory_total_bytes: int | None
    overcommit_ratio: float | None
    vms: dict[str, int]
    last_tick_age_s: float | None


@dataclass(frozen=True, slots=True)
class FleetTotals:
    hosts: int
    hosts_up: int
    hosts_short: int
    reclaimed_bytes: dict[str, int]
    budget_bytes: int | None
    memory_total_bytes: int | None
    overcommit_ratio: float | None
    vms: dict[str, int]


@dataclass(frozen=True, slots=True)
class FleetView:
    prometheus: str
    #: Prometheus's evaluation time of every query (Unix seconds): one instant for the whole table.
    time: float
    hosts: tuple[HostRow, ...]
    fleet: FleetTotals

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape: plain lists and objects, sizes in integer bytes, unknown values null."""
        body = asdict(self)
        body["hosts"] = list(body["hosts"])
        return body


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bytes(value: float | None) -> int | None:
    return None if value is None or not math.isfinite(value) else int(value)


def _by(samples: Samples, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(m.get(k, "") for k in labels): v for m, v in samples}


def build_view(url: str, at: float, host: Mapping[str, Samples], fleet: Mapping[str, Samples]) -> FleetView:
    """The table from the queries' answers (pure: the tests feed it what Prometheus said)."""
    up = _by(host["up"], "host")
    short = _by(host["short"], "host")
    budget = _by(host["budget"], "host")
    memory = _by(host["memory"], "host")
    overcommit = _by(host["overcommit"], "host")
    age = _by(host["last_tick_age"], "host")
    names = sorted({m["host"] for samples in host.values() for m, _ in samples if m.get("host")})
    rows = []
    for name in names:
        vms = {s: int(v) for (h, s), v in _by(host["vms"], "host", "status").items() if h == name}
        reclaimed = {
            m: int(v) for (h, m), v in _by(host["reclaimed"], "host", "measure").items() if h == name
        }
        rows.append(
            HostRow(
                host=name,
                up=up.get((name,)) == 1,
                short=None if (name,) not in short else short[(name,)] == 1,
                reclaimed_bytes=reclaimed,
                budget_bytes=_bytes(budget.get((name,))),
                memory_total_bytes=_bytes(memory.get((name,))),
                overcommit_ratio=_finite(overcommit.get((name,), math.nan)),
                vms=vms,
                last_tick_age_s=_finite(age.get((name,), math.nan)),
            )
        )
    one = {key: (samples[0][1] if samples else None) for key, samples in fleet.items()}
    totals = FleetTotals(
        hosts=len(rows),
        hosts_up=sum(r.up for r in rows),
        hosts_short=sum(bool(r.short) for r in rows),
        reclaimed_bytes={m.get("measure", ""): int(v) for m, v in fleet["reclaimed"]},
        budget_bytes=_bytes(one["budget"]),
        memory_total_bytes=_bytes(one["memory"]),
        overcommit_ratio=None if one["overcommit"] is None else _finite(one["overcommit"]),
        vms={m.get("status", ""): int(v) for m, v in fleet["vms"]},
    )
    return FleetView(prometheus=url, time=at, hosts=tuple(rows), fleet=totals)


def _api_base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidValueError(
            "Prometheus address", url, "an http:// or https:// URL, e.g. http://prometheus:9090"
        )
    return url.rstrip("/") + "/api/v1/query"


def query(url: str, expr: str, at: float | None = None) -> tuple[float | None, Samples]:
    """One instant query: its evaluation time (None for an empty answer) and the result vector, or a
    PrometheusError that says what went wrong (unreachable, an HTTP error with Prometheus's own message,
    an answer that is not its API)."""
    params = {"query": expr} | ({"time": repr(at)} if at is not None else {})
    full = f"{_api_base(url)}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(full, timeout=TIMEOUT_S) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = str(json.loads(e.read())["error"])
        except (ValueError, KeyError, TypeError):
            detail = "is this a Prometheus server?"
        raise PrometheusError(f"Prometheus at {url} answered HTTP {e.code} {e.reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PrometheusError(f"cannot reach Prometheus at {url} ({reason})") from None
    except ValueError:
        raise PrometheusError(f"the answer from {url} is not JSON: is this a Prometheus server?") from None
    try:
        data = body["data"]
        if body["status"] != "success" or data["resultType"] != "vector":
            raise TypeError(body.get("error") or data["resultType"])
        result = [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        stamp = float(data["result"][0]["value"][0]) if data["result"] else None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise PrometheusError(f"the answer from {url} is not Prometheus's query API ({e})") from None
    return stamp, result


def read_fleet(url: str) -> FleetView:
    """Every query evaluated at one instant, Prometheus's own "now" (the client's clock may be off)."""
    at, _ = query(url, "vector(time())")
    if at is None:
        raise PrometheusError(
            f"the answer from {url} to vector(time()) is empty: is this a Prometheus server?"
        )
    host = {key: query(url, expr, at)[1] for key, expr in HOST_QUERIES.items()}
    fleet = {key: query(url, expr, at)[1] for key, expr in FLEET_QUERIES.items()}
    return build_view(url, at, host, fleet)


def _vms_text(vms: Mapping[str, int]) -> str:
    order = [*STATUSES, *sorted(set(vms) - set(STATUSES))]
    return ", ".join(f"{vms[s]} {s}" for s in order if vms.get(s)) or "-"


def _reclaimed_text(reclaimed: Mapping[str, int]) -> str:
    parts = [human(reclaimed[BALLOON])] if BALLOON in reclaimed else []
    parts += [f"{m} {human(v)}" for m, v in sorted(reclaimed.items()) if m != BALLOON]
    return " · ".join(parts) or "-"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_table(view: FleetView) -> None:
    rows = [
        [
            r.host,
            "up" if r.up else "DOWN",
            human(r.memory_total_bytes),
            human(r.budget_bytes),
            _reclaimed_text(r.reclaimed_bytes),
            _ratio(r.overcommit_ratio),
            "-" if r.short is None else ("SHORT" if r.short else "no"),
            _vms_text(r.vms),
            "-" if r.last_tick_age_s is None else f"{r.last_tick_age_s:.0f}s ago",
        ]
        for r in view.hosts
    ]
    f = view.fleet
    rows.append(
        [
            f"fleet: {f.hosts} hosts",
            f"{f.hosts_up} up",
            human(f.memory_total_bytes),
            human(f.budget_bytes),
            _reclaimed_text(f.reclaimed_bytes),
            _ratio(f.overcommit_ratio),
            f"{f.hosts_short} short",
            _vms_text(f.vms),
            "",
        ]
    )
    columns = ["HOST", "DAEMON", "RAM", "BUDGET", "RECLAIMED", "OVERCOMMIT", "SHORT", "VMS", "LAST TICK"]
    table(f"autoballoon fleet from {view.prometheus}", columns, rows, right={2, 3, 4, 5, 8})


@cli.command("fleet")
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    envvar=PROMETHEUS_ENV,
    required=True,
    help="The Prometheus that scrapes every host's daemon, e.g. http://prometheus:9090 "
    f"(also ${PROMETHEUS_ENV}).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object; sizes in bytes, stable field names.")
def fleet_command(prometheus_url: str, as_json: bool) -> None:
    """Every host's daemon in one table, from Prometheus: up or down, RAM, budget, memory reclaimed,
    over-commit, short of memory or not, and its VMs by status, with the fleet's totals."""
    view = read_fleet(prometheus_url)
    if as_json:
        emit_json(view.to_json())
        return
    if not view.hosts:
        click.echo(
            f"autoballoon: Prometheus at {prometheus_url} has no autoballoon series: is it scraping the "
            "daemons (contrib/prometheus/prometheus.yml)?",
            err=True,
        )
    print_table(view)
