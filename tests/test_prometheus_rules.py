"""``contrib/prometheus/`` checked by Prometheus's own ``promtool``: the rule files and the example config
are valid, their unit tests pass, and every alert and recording rule has a unit test."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.journal import Journal
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.history import History, Sampler
from autoballoon.server.metrics import make_registry
from autoballoon.server.tunables import TUNABLES
from tests.prometheus_fleet import GRAFANA_DASHBOARD, RULE_FILES, RULES_DIR, need_prometheus

TESTS = ("tests/rules_test.yml", "tests/alerts_test.yml")


def promtool(*args: str) -> str:
    _, binary = need_prometheus()
    done = subprocess.run([binary, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def load(name: str) -> Any:
    return yaml.safe_load((RULES_DIR / name).read_text())


def rules(kind: str) -> list[str]:
    return [r[kind] for name in RULE_FILES for g in load(name)["groups"] for r in g["rules"] if kind in r]


def test_the_rule_files_and_the_example_config_are_valid() -> None:
    out = promtool("check", "rules", *RULE_FILES)
    assert out.count("SUCCESS") == len(RULE_FILES)
    out = promtool("check", "config", "prometheus.yml")
    assert f"{len(RULE_FILES)} rule files found" in out


def test_the_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", *TESTS)
    assert out.count("SUCCESS") == len(TESTS) and "FAILED" not in out


def test_every_alert_fires_in_a_unit_test_and_every_recording_rule_is_tested() -> None:
    alerts = rules("alert")
    assert sorted(alerts) == sorted(
        [
            "AutoballoonDown",
            "AutoballoonHostShort",
            "AutoballoonVMQuarantined",
            "AutoballoonVMStuck",
            "AutoballoonGuestOOM",
            "AutoballoonNoStats",
        ]
    )
    tested = load(TESTS[1])["tests"]
    fired = {c["alertname"] for t in tested for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tested for c in t.get("alert_rule_test", []) if not c["exp_alerts"]}
    assert fired == set(alerts) and quiet == set(alerts)  # each both fires and, before that, does not
    exprs = {c["expr"] for c in load(TESTS[0])["tests"][0]["promql_expr_test"]}
    assert set(rules("record")) <= exprs


def test_every_alert_says_what_to_do_and_how_bad_it_is() -> None:
    for name in RULE_FILES:
        for group in load(name)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                    assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
                    assert "{{ $labels.host }}" in rule["annotations"]["summary"], rule["alert"]


def test_the_rules_read_only_series_the_daemon_exports() -> None:
    """A renamed metric would leave a rule (and its alert) silently empty: every autoballoon_* series the
    rules and the Grafana dashboard read must be among those a daemon exports after one tick."""
    backend = SimBackend.open("sim:///demo?speed=max")
    controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
    source = ControllerSource(controller, TUNABLES)
    history = History(TUNABLES.history_points)
    sampler = Sampler(history, lambda: source.view().snapshot, TUNABLES.sample_interval_s)
    for _ in range(5):  # the per-second rates need two samples, the actions a few ticks
        controller.tick()
        source.on_tick(controller)
        sampler.sample_once()
        backend.clock.sleep(controller.config.interval_s)
    registry = make_registry(source.view, history, tick_histogram=source.tick_histogram)
    exported = {
        s.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    for path in [*(RULES_DIR / n for n in RULE_FILES), GRAFANA_DASHBOARD]:
        for metric in set(re.findall(r"(?<![:\w])autoballoon_[a-z_]+(?![:\w])", path.read_text())):
            assert metric in exported, f"{path.name} reads {metric}, which the daemon does not export"
