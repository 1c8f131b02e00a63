"""Prometheus's own alerts page in headless Chromium, on the two-host fleet of ``tests/prometheus_fleet.py``:
what an operator sees first when a host is short, a balloon is stuck and a guest reports no stats.

The page must list all six autoballoon alerts with the three the fleet was built to raise as firing and
the others inactive. The screenshot is kept in ``artifacts/fleet-alerts.png`` (the README's "Many hosts"
section shows a copy, ``docs/fleet-alerts.png``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import prometheus_fleet
from tests.prometheus_fleet import Fleet, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FIRING = {"AutoballoonHostShort", "AutoballoonVMStuck", "AutoballoonNoStats"}
QUIET = {"AutoballoonDown", "AutoballoonVMQuarantined", "AutoballoonGuestOOM"}
#: Each alert rule on the classic page: its name and the state class Prometheus gives its row.
RULES = """
return [...document.querySelectorAll('tr.alert_header')].map(r => ({
  name: r.querySelector('td').textContent.trim(),
  state: r.className,
}));
"""


def wait_until(browser: Any, script: str, timeout: float = 20.0) -> Any:
    """The script's first truthy value, polled in the page."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for: {script}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with prometheus_fleet.fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running


def test_the_alerts_page_shows_what_fires_on_the_fleet(fleet: Fleet, browser: Any) -> None:
    def firing() -> set[str]:
        return {a["labels"]["alertname"] for a in fleet.prometheus.alerts() if a["state"] == "firing"}

    wait_for(lambda: firing() == FIRING, f"alerts {sorted(FIRING)} firing", fleet.prometheus.log, timeout=60)
    browser.get(fleet.prometheus.url + "classic/alerts")
    rules = wait_until(
        browser, RULES.replace("return ", "const rules = ", 1) + "return rules.length >= 6 && rules;"
    )
    states = {r["name"].split(" ")[0]: r["state"] for r in rules}
    assert set(states) == FIRING | QUIET, states
    for name in FIRING:
        assert "alert-danger" in states[name], (name, states[name])  # red: firing
    for name in QUIET:
        assert "alert-success" in states[name], (name, states[name])  # green: inactive
    # open the stuck balloon's alert, as an operator would, to see which host and VM it is about
    browser.execute_script(
        "[...document.querySelectorAll('tr.alert_header')]"
        ".filter(r => r.textContent.includes('AutoballoonVMStuck')).forEach(r => r.click())"
    )
    shown = (
        "return [...document.querySelectorAll('tr.alert_details')].filter(r => r.offsetParent)"
        ".map(r => r.textContent).join(' ')"
    )
    details = wait_until(browser, shown)
    assert 'host="hv-a"' in details and 'vm="wedged"' in details, details
    # the window as tall as the list (plus the browser's own frame), without the empty page below it
    height = browser.execute_script(
        "return [...document.querySelectorAll('tr.alert_header')].pop().getBoundingClientRect().bottom"
        " + window.outerHeight - window.innerHeight + 24"
    )
    browser.set_window_size(1400, int(height))
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "fleet-alerts.png"))
