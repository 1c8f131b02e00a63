"""The dashboard in headless Chromium against the demo daemon, as an operator would open it.

Starts ``autoballoon --connect 'sim:///demo?speed=20' run --listen 127.0.0.1:0`` (what ``make demo`` runs,
on a free port), reads the address it prints first, and checks that the page shows one row per VM and
that its charts move. The screenshot is kept in ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import need_browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DEMO_URI = "sim:///demo?speed=20"
BURST_URI = f"sim://{Path(__file__).resolve().parents[2] / 'scenarios' / 'fleet-burst.toml'}?speed=200"
START_TIMEOUT_S = 30.0
#: Real seconds between the two reads of the charts: at speed 20 and a 2 s interval, several ticks.
CHART_WAIT_S = 3.0

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def _serve(uri: str, log: Path) -> Iterator[str]:
    """``autoballoon --connect URI run`` in a subprocess; yields the dashboard URL it printed first."""
    cmd = [sys.executable, "-m", "autoballoon", "--connect", uri, "run", "--listen", "127.0.0.1:0"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        match = re.search(r"dashboard (http://\S+/)", first)
        assert match, (
            f"the first line of `{' '.join(cmd)}` should give the dashboard: {first!r}; {log.read_text()}"
        )
        url = match.group(1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "api/v1/vms", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"the daemon never answered on {url}: {log.read_text()}")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo daemon (what ``make demo`` runs, on a free port)."""
    need_browser()
    yield from _serve(DEMO_URI, tmp_path_factory.mktemp("demo") / "stderr.log")


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The daemon on scenarios/fleet-burst.toml, fast enough that its burst (at 900 s) lands in seconds."""
    need_browser()
    yield from _serve(BURST_URI, tmp_path_factory.mktemp("burst") / "stderr.log")


def _wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for: {script}")


CHARTS = """
return [...document.querySelectorAll('.vm-row')].map(r => ({
  vm: r.dataset.vm,
  samples: Number(r.dataset.samples),
  lastTime: Number(r.dataset.lastTime),
  actual: r.querySelector('path[data-series="actual"]').getAttribute('d'),
  badge: r.querySelector('.badge').textContent,
}));
"""


def test_dashboard_shows_every_vm_and_its_charts_move(demo: str, browser: Any) -> None:
    with urllib.request.urlopen(demo + "api/v1/vms", timeout=5) as resp:
        names = [v["name"] for v in json.load(resp)]
    assert len(names) >= 4
    browser.get(demo)
    _wait(browser, "return Number(document.body.dataset.updates || 0) >= 2")
    _wait(
        browser, "return [...document.querySelectorAll('.vm-row')].every(r => Number(r.dataset.samples) >= 2)"
    )
    first = {row["vm"]: row for row in browser.execute_script(CHARTS)}
    assert sorted(first) == sorted(names)  # one row per VM, no more
    assert all(row["actual"].startswith("M") for row in first.values())  # a line was drawn
    assert all(row["badge"] for row in first.values())

    time.sleep(CHART_WAIT_S)
    second = {row["vm"]: row for row in browser.execute_script(CHARTS)}
    for vm in names:
        assert second[vm]["lastTime"] > first[vm]["lastTime"], f"{vm}'s chart did not move on"
    assert any(second[vm]["actual"] != first[vm]["actual"] for vm in names)

    host_total = browser.find_element("id", "h-total").text
    assert host_total.endswith("GiB")
    assert "live" in browser.find_element("id", "conn").text
    actions = browser.find_elements("css selector", "#actions tr")
    assert actions and "none yet" not in actions[0].text  # the demo host acts within seconds

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors


HARM = """
return {
  banner: document.getElementById('h-harm').hidden ? '' : document.getElementById('h-harm').textContent,
  conn: document.getElementById('conn').dataset.state,
  badges: [...document.querySelectorAll('.vm-row')].map(r => r.querySelector('.badge').textContent),
  need: [...document.querySelectorAll('.vm-row .n-need')].map(e => e.textContent),
};
"""


def test_a_burst_turns_the_page_red_and_names_the_guests(burst: str, browser: Any) -> None:
    """During fleet-burst's burst the page showed every VM "managed" under a green "live": now a red
    banner says the host is short and names the suffering guests, and each one's badge says its harm."""
    browser.get(burst)
    _wait(browser, "return !document.getElementById('h-harm').hidden", timeout=60.0)
    seen = browser.execute_script(HARM)
    assert "Host short" in seen["banner"] or "suffer" in seen["banner"]
    assert seen["conn"] == "harm"
    _wait(
        browser,
        "return [...document.querySelectorAll('.vm-row .badge')].filter(b => "
        "['swapping', 'pressure', 'below-need', 'below-oom-floor'].includes(b.textContent)).length >= 12",
        timeout=30.0,
    )
    seen = browser.execute_script(HARM)
    assert "node-" in seen["banner"]
    assert len(seen["badges"]) == 24
    assert all(n.endswith("GiB") or n.endswith("MiB") for n in seen["need"])
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard-burst.png"))


PHONE = (390, 844)
DESKTOP = (1400, 1500)
CHART = """
const row = document.querySelector('.vm-row');
const style = (sel) => getComputedStyle(row.querySelector(sel));
const label = row.querySelector('.y-top').getBoundingClientRect();
return {
  targetDash: style('path[data-series="target"]').strokeDasharray,
  actualDash: style('path[data-series="actual"]').strokeDasharray,
  targetColour: style('path[data-series="target"]').stroke,
  actualColour: style('path[data-series="actual"]').stroke,
  labelPx: parseFloat(style('.y-top').fontSize),
  labelWidth: label.width,
  labelText: row.querySelector('.y-top').textContent,
  events: [...document.querySelectorAll('#events li')].map(li => li.textContent),
};
"""


def test_charts_an_operator_can_read_on_desktop_and_phone(demo: str, browser: Any) -> None:
    """Target and actual were one teal line over a fixed 8-minute window, axis text was about 6 px wide
    on a phone, and events read "stuck: stuck: stuck: balloon…"."""
    try:
        browser.set_window_size(*DESKTOP)
        browser.get(demo)
        _wait(browser, "return Number(document.body.dataset.updates || 0) >= 3")
        seen = browser.execute_script(CHART)
        assert seen["targetDash"] not in ("none", "") and seen["actualDash"] in ("none", "")
        assert seen["targetColour"] != seen["actualColour"]
        assert seen["labelPx"] >= 10 and seen["labelText"].endswith("GiB")
        assert not any("stuck: stuck: stuck:" in e for e in seen["events"]), seen["events"]  # VM, status
        # hover: a readout with every series at the point under the pointer
        from selenium.webdriver.common.action_chains import ActionChains

        chart = browser.find_element("css selector", ".vm-row .chart")
        ActionChains(browser).move_to_element(chart).perform()
        readout = browser.find_element("css selector", ".vm-row .readout")
        _wait(browser, "return !document.querySelector('.vm-row .readout').hidden")
        assert "target" in readout.text and "actual" in readout.text
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "dashboard-desktop.png"))
        # the window choice: the longer windows come from the coarse history
        browser.find_element("css selector", '#window button[data-s="3600"]').click()
        pressed = "return document.querySelector('#window [data-s=\"3600\"]').getAttribute('aria-pressed')"
        _wait(browser, pressed + " === 'true'")
        with urllib.request.urlopen(demo + "api/v1/dashboard?window=3600", timeout=5) as resp:
            coarse = json.load(resp)
        assert coarse["history_coarse"] is True and coarse["history_points"] > 240
        browser.set_window_size(*PHONE)
        time.sleep(1.0)
        phone = browser.execute_script(CHART)
        assert phone["labelPx"] >= 10 and phone["labelWidth"] >= 30  # not squeezed with the chart
        assert browser.save_screenshot(str(ARTIFACTS / "dashboard-phone.png"))
    finally:
        browser.set_window_size(*DESKTOP)
