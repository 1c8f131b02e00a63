"""The fleet view end to end: two daemons on two simulated hosts, scraped by a real Prometheus with the
shipped rules (``tests/prometheus_fleet.py``); the recording rules, the alerts, ``autoballoon fleet`` and
every Grafana panel's query are checked against what the daemons themselves say.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import prometheus_fleet
from tests.cli_runner import run_cli
from tests.prometheus_fleet import GRAFANA_DASHBOARD, Fleet, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: Real seconds to wait for the daemons' balloons to settle and Prometheus to catch up with them.
SETTLE_S = 40.0
#: ... and for an alert to fire (the shortened ``for:`` plus a scrape and an evaluation or two).
ALERT_S = 30.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with prometheus_fleet.fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running


def values(fleet: Fleet, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1])
        for r in fleet.prometheus.query(expr)
    }


def daemon_figures(fleet: Fleet) -> dict[str, Any]:
    """What each daemon's own API says: the host's sums, budget and its VMs' states."""
    out: dict[str, Any] = {}
    for name, d in fleet.daemons.items():
        host = d.api("host")
        vms = d.api("vms")
        out[name] = {
            "reclaimed": host["sum_max_bytes"] - host["sum_actual_bytes"],
            "budget": host["budget_bytes"],
            "memory": host["mem_total_bytes"],
            "sum_max": host["sum_max_bytes"],
            "statuses": sorted(v["status"] for v in vms),
        }
    return out


def settled(fleet: Fleet, compare: Callable[[dict[str, Any]], list[str]]) -> dict[str, Any]:
    """Retry until the daemons say the same thing before and after ``compare`` reads Prometheus and it
    finds no difference; the balloons move and Prometheus scrapes once a second, so a single read could
    catch one side a tick behind the other. Fails with the last differences."""
    deadline = time.monotonic() + SETTLE_S
    problems: list[str] = []
    while time.monotonic() < deadline:
        before = daemon_figures(fleet)
        problems = compare(before)
        if not problems and daemon_figures(fleet) == before:
            return before
        time.sleep(0.5)
    pytest.fail("Prometheus never agreed with the daemons: " + "; ".join(problems))


def test_the_recording_rules_give_the_fleet_totals_the_daemons_report(fleet: Fleet) -> None:
    def compare(api: dict[str, Any]) -> list[str]:
        expected = {
            ("host:autoballoon_reclaimed_bytes:sum", h, "balloon"): a["reclaimed"] for h, a in api.items()
        }
        expected |= {("host:autoballoon_budget_bytes:sum", h, ""): a["budget"] for h, a in api.items()}
        expected |= {
            ("host:autoballoon_overcommit:ratio", h, ""): a["sum_max"] / a["memory"] for h, a in api.items()
        }
        expected[("fleet:autoballoon_reclaimed_bytes:sum", "", "balloon")] = sum(
            a["reclaimed"] for a in api.values()
        )
        expected[("fleet:autoballoon_budget_bytes:sum", "", "")] = sum(a["budget"] for a in api.values())
        expected[("fleet:autoballoon_overcommit:ratio", "", "")] = sum(
            a["sum_max"] for a in api.values()
        ) / sum(a["memory"] for a in api.values())
        for status in {s for a in api.values() for s in a["statuses"]}:
            count = sum(a["statuses"].count(status) for a in api.values())
            expected[("fleet:autoballoon_vms:sum", "", status)] = count
        got: dict[tuple[str, str, str], float] = {}
        for rule in {k[0] for k in expected}:
            label = "status" if rule == "fleet:autoballoon_vms:sum" else "measure"
            for (host, value), v in values(fleet, rule, "host", label).items():
                got[(rule, host, value)] = v
        return [
            f"{key}: Prometheus {got.get(key)}, daemons {want}"
            for key, want in expected.items()
            if got.get(key) != pytest.approx(want, rel=1e-12)
        ]

    api = settled(fleet, compare)
    assert api["hv-a"]["reclaimed"] > 0 and api["hv-b"]["reclaimed"] > 0  # the balloons did move
    assert "stuck" in api["hv-a"]["statuses"] and "no-stats" in api["hv-b"]["statuses"]
    short = values(fleet, "host:autoballoon_short:bool", "host")
    assert short == {("hv-a",): 0, ("hv-b",): 1}  # hv-b's guests want 7.5 GiB of its 8 GiB
    assert values(fleet, "fleet:autoballoon_hosts_short:count") == {(): 1}
    assert values(fleet, "host:autoballoon_up:bool", "host") == {("hv-a",): 1, ("hv-b",): 1}


def firing(fleet: Fleet) -> set[tuple[str, str, str]]:
    return {
        (a["labels"]["alertname"], a["labels"].get("host", ""), a["labels"].get("vm", ""))
        for a in fleet.prometheus.alerts()
        if a["state"] == "firing"
    }


def test_a_stuck_guest_fires_its_alert(fleet: Fleet) -> None:
    wait_for(
        lambda: ("AutoballoonVMStuck", "hv-a", "wedged") in firing(fleet),
        "AutoballoonVMStuck for hv-a/wedged",
        fleet.prometheus.log,
        timeout=ALERT_S,
    )
    # the other conditions the two hosts were built with fire too, and nothing else
    wait_for(lambda: len(firing(fleet)) >= 3, "three alerts", timeout=ALERT_S)
    assert firing(fleet) == {
        ("AutoballoonVMStuck", "hv-a", "wedged"),
        ("AutoballoonNoStats", "hv-b", "legacy"),
        ("AutoballoonHostShort", "hv-b", ""),
    }


def test_the_fleet_command_shows_what_the_daemons_report(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fleet.prometheus.url

    def compare(api: dict[str, Any]) -> list[str]:
        code, out, err = run_cli(capsys, "fleet", "--prometheus", url, "--json")
        assert code == 0, err
        view = json.loads(out)
        hosts = {h["host"]: h for h in view["hosts"]}
        problems = [f"hosts {sorted(hosts)}"] if sorted(hosts) != sorted(api) else []
        for name, a in api.items():
            h = hosts.get(name, {})
            statuses = {s: a["statuses"].count(s) for s in set(a["statuses"])}
            got = (
                h.get("reclaimed_bytes"),
                h.get("budget_bytes"),
                {s: n for s, n in h.get("vms", {}).items() if n},
            )
            want = ({"balloon": a["reclaimed"]}, a["budget"], statuses)
            if got != want or h.get("up") is not True:
                problems.append(f"{name}: fleet says {got} up={h.get('up')}, daemon {want}")
        total = sum(a["reclaimed"] for a in api.values())
        if view["fleet"]["reclaimed_bytes"] != {"balloon": total}:
            problems.append(f"fleet reclaimed {view['fleet']['reclaimed_bytes']} != {total}")
        return problems

    settled(fleet, compare)
    code, out, _ = run_cli(capsys, "fleet", "--prometheus", url, "--json")
    view = json.loads(out)
    assert [(h["host"], h["short"]) for h in view["hosts"]] == [("hv-a", False), ("hv-b", True)]
    assert (
        view["fleet"]["hosts"] == 2 and view["fleet"]["hosts_up"] == 2 and view["fleet"]["hosts_short"] == 1
    )
    code, out, _ = run_cli(capsys, "fleet", "--prometheus", url)
    assert code == 0
    rows = {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("hv-a", "hv-b")
    }
    assert re.search(r"\bup\b.*\bno\b.*1 stuck", rows["hv-a"]), rows
    assert re.search(r"\bup\b.*\bSHORT\b.*1 no-stats", rows["hv-b"]), rows
    assert "fleet: 2 hosts" in out


def panel_queries() -> list[tuple[str, str]]:
    """Every (panel title, PromQL) in the Grafana dashboard, rows' nested panels included."""
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    out = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


#: What Grafana puts in place of the dashboard's variables, for one host and one VM of the test fleet.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1s",
    "$__range": "5m",
    "${host:regex}": "hv-a",
    "$host": "hv-a",
    "${vm:regex}": "wedged",
    "$vm": "wedged",
}


def test_every_grafana_panel_query_runs_and_finds_data(fleet: Fleet) -> None:
    queries = panel_queries()
    assert len(queries) >= 15
    wait_for(lambda: firing(fleet), "an alert", timeout=ALERT_S)  # the fleet has run for a while
    empty = []
    for title, expr in queries:
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"panel {title!r}: unknown variable in {expr}"
        if not fleet.prometheus.query(expr):  # a query error fails inside query() with Prometheus's message
            empty.append(title)
    assert empty == []
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            metric, label = re.fullmatch(
                r"label_values\((\w+)(?:\{[^}]*\})?, *(\w+)\)", var["query"]["query"]
            ).groups()
            series = fleet.prometheus.api("series", **{"match[]": metric})["data"]
            assert {s[label] for s in series}, f"variable {var['name']}: no {label} on {metric}"


def test_a_paused_daemon_is_down_until_it_resumes(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """Last in this module: it stops hv-b's daemon for a while (SIGSTOP: its scrapes time out)."""
    daemon = fleet.daemons["hv-b"]
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: ("AutoballoonDown", "hv-b", "") in firing(fleet),
            "AutoballoonDown for hv-b",
            timeout=ALERT_S,
        )
        assert values(fleet, "host:autoballoon_up:bool", "host") == {("hv-a",): 1, ("hv-b",): 0}
        code, out, _ = run_cli(capsys, "fleet", "--prometheus", fleet.prometheus.url, "--json")
        hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
        assert code == 0 and hosts["hv-a"]["up"] is True and hosts["hv-b"]["up"] is False
        assert hosts["hv-b"]["budget_bytes"] is None  # nothing is known of a host that exports nothing now
        assert not any(a == "AutoballoonDown" and h == "hv-a" for a, h, _ in firing(fleet))
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: values(fleet, "host:autoballoon_up:bool", "host") == {("hv-a",): 1, ("hv-b",): 1},
        "hv-b back up",
        timeout=ALERT_S,
    )
