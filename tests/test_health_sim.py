"""The health guard in the daemon on the simulator: a CPU-storm guest is quarantined, deflated and left
alone until released (API, quarantine time); a busy guest is not blamed; a hot host pauses shrinking;
``disable_balloon`` edits only the next-boot config; ``list`` and ``release`` talk to the daemon."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import autoballoon.cli as cli_module
from autoballoon.backends.sim import SimBackend
from autoballoon.cli import main
from autoballoon.config import parse_config
from autoballoon.controller import Controller
from autoballoon.errors import ConnectionLostError
from autoballoon.journal import Journal
from autoballoon.model import Status
from autoballoon.server import RunningServer, serve_controller
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.tunables import TUNABLES
from autoballoon.sim import Simulation
from autoballoon.sim.scenario import loads_scenario
from autoballoon.units import GiB
from tests.helpers.server import asgi_client

HEALTH = {"sustain_s": 10, "window_s": 60, "quarantine_s": 0}
TOKEN = "t0ken-for-the-health-tests"

SCENARIO = """
[host]
ram = "32G"
reserve = "512M"
base_used = "512M"
cpus = {cpus}
[run]
duration = 86400
step = 1

[[guest]]
name = "storm"
max = "4G"
vcpus = 2
os = "windows"
cpu_storm = true
stats_period = 2
policy = {{ min = "512M" }}
demand = {{ shape = "constant", level = "1G" }}

[[guest]]
name = "busy"
max = "4G"
vcpus = 2
cpu = 0.97
stats_period = 2
demand = {{ shape = "constant", level = "1G" }}
"""


def open_sim(cpus: int = 8) -> SimBackend:
    sim = Simulation(loads_scenario(SCENARIO.format(cpus=cpus), source="<test>"))
    sim.run(30.0)
    return SimBackend(sim, uri="sim:///health-test")


def tick(controller: Controller, backend: SimBackend, seconds: float) -> None:
    for _ in range(int(seconds / controller.config.interval_s)):
        controller.tick()
        backend.clock.sleep(controller.config.interval_s)


def journal(controller: Controller, kind: str, vm: str | None = None) -> list[dict[str, Any]]:
    return [
        dict(e)
        for e in controller.journal.recent()
        if e.get("kind") == kind and (vm is None or e.get("vm") == vm)
    ]


def shrinks(controller: Controller, vm: str) -> list[dict[str, Any]]:
    return [e for e in journal(controller, "action", vm) if e["direction"] == "shrink"]


def status_of(controller: Controller, vm: str) -> str:
    return next(v.status for v in controller.status().vms if v.name == vm)


def make(config: dict[str, Any] | None = None, cpus: int = 8) -> tuple[SimBackend, Controller]:
    backend = open_sim(cpus)
    cfg = parse_config({"health": HEALTH} | (config or {}))
    return backend, Controller(backend, backend.clock, cfg, Journal(None, ring_size=10_000))


def test_a_storm_guest_is_quarantined_deflated_and_left_alone_until_released() -> None:
    backend, controller = make()
    tick(controller, backend, 120)
    (q,) = journal(controller, "quarantine", "storm")
    first_shrink = shrinks(controller, "storm")[0]
    assert q["detect_s"] <= controller.config.health.window_s
    print(f"simulated storm detected {q['detect_s']:.0f} s after the balloon change")
    assert (
        q["time"] - first_shrink["time"] <= controller.config.health.window_s + controller.config.interval_s
    )
    assert q["remedy"] == "autoballoon balloon storm --model none" and q["remedy"] in q["message"]
    assert status_of(controller, "storm") == Status.QUARANTINED
    vm = backend.guest("storm")
    assert vm.target_bytes == vm.max_bytes  # deflated to its max
    assert journal(controller, "action", "storm")[-1]["reason"] == "quarantine"
    # The guest that was busy before any balloon change was ballooned but never blamed.
    assert shrinks(controller, "busy") and not journal(controller, "quarantine", "busy")

    # Never ballooned again while quarantined (quarantine_s = 0: until released).
    before = len(shrinks(controller, "storm"))
    tick(controller, backend, 600)
    assert len(shrinks(controller, "storm")) == before
    assert backend.guest("storm").actual_bytes == vm.max_bytes  # the storm is over
    assert "storm" in controller.quarantined

    # Released through the API: ballooned again at once.
    source = ControllerSource(controller, TUNABLES)
    api = asgi_client(source, TOKEN, submit_wait_s=0.1)  # nobody ticks here: the release stays queued
    source.on_tick()
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert api.post("/api/v1/vms/storm/release").status_code == 401  # no token
    assert api.post("/api/v1/vms/busy/release", headers=auth).status_code == 409
    assert api.post("/api/v1/vms/nosuch/release", headers=auth).status_code == 404
    answer = api.post("/api/v1/vms/storm/release", headers=auth)
    assert answer.status_code == 202 and answer.json()["released"]
    tick(controller, backend, 30)
    assert journal(controller, "release", "storm")
    assert len(shrinks(controller, "storm")) > before


def test_a_quarantine_ends_after_its_time_and_the_guard_catches_the_storm_again() -> None:
    backend, controller = make({"health": HEALTH | {"quarantine_s": 300}})
    tick(controller, backend, 120)
    assert len(journal(controller, "quarantine", "storm")) == 1
    tick(controller, backend, 300)
    (ended,) = journal(controller, "release", "storm")
    assert "ended" in ended["message"]
    tick(controller, backend, 120)
    assert len(journal(controller, "quarantine", "storm")) == 2  # ballooned again, stormed again, caught


def test_storm_harm_with_and_without_the_guard() -> None:
    guarded = make()
    unguarded = make({"health": {"enabled": False}})
    for backend, controller in (guarded, unguarded):
        tick(controller, backend, 600)
    storm_s = []
    for backend, _ in (guarded, unguarded):
        cpu = backend.guest("storm").cpu_time_ns or 0
        storm_s.append(cpu / 1e9 / 2)  # vCPU-seconds over its two vCPUs
    assert storm_s[0] < storm_s[1] / 5, storm_s


def test_a_hot_host_pauses_shrinking_and_resumes_after_the_quarantine() -> None:
    # One host CPU: the busy guest alone loads it ~2.0; with the storm guest spinning it is ~3.9.
    tight = {"host_pause_hold_s": 10, "host_load_factor": 3.0, "host_load_clear_factor": 3.0}
    backend, controller = make({"health": HEALTH | tight}, cpus=1)
    paused_at: list[float] = []

    def watch() -> None:
        if controller.status().shrink_paused:
            paused_at.append(backend.clock.now())

    for _ in range(150):
        controller.tick()
        watch()
        backend.clock.sleep(controller.config.interval_s)
    (pause,) = journal(controller, "pause")
    (resume,) = journal(controller, "resume")
    assert "host load" in pause["message"] and resume["time"] > pause["time"]
    assert paused_at and controller.status().shrink_paused is None
    during = [e for e in journal(controller, "action") if pause["time"] < e["time"] < resume["time"]]
    assert all(e["direction"] == "grow" for e in during), during


def test_disable_balloon_edits_only_the_next_boot_config() -> None:
    backend, controller = make({"health": HEALTH | {"disable_balloon": True}})
    tick(controller, backend, 120)
    (remedy,) = journal(controller, "remedy", "storm")
    assert remedy["applied"] and "next boot" in remedy["message"]
    assert backend.next_boot("storm")["balloon_model"] == "none"
    assert backend.guest("storm").balloon.model == "virtio"  # the running VM keeps its balloon
    assert backend.next_boot("busy")["balloon_model"] == "virtio"


def test_enable_autodeflate_gives_guests_the_safety_net_from_their_next_boot() -> None:
    backend, controller = make({"health": HEALTH | {"enable_autodeflate": True}})
    tick(controller, backend, 10)
    remedies = {e["vm"]: e for e in journal(controller, "remedy")}
    assert set(remedies) == {"storm", "busy"} and all(e["applied"] for e in remedies.values())
    assert "autodeflate on" in remedies["busy"]["message"] and "next boot" in remedies["busy"]["message"]
    assert backend.next_boot("busy")["autodeflate"] is True
    assert backend.guest("busy").balloon.autodeflate is False  # it cannot change on the running VM
    dry_backend, dry = make({"health": HEALTH | {"enable_autodeflate": True}})
    dry.dry_run = True
    tick(dry, dry_backend, 10)
    assert journal(dry, "remedy") and all(not e["applied"] for e in journal(dry, "remedy"))
    assert dry_backend.next_boot("busy")["autodeflate"] is False


def test_a_connection_lost_while_applying_a_remedy_does_not_stop_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The remedy is journalled as not applied, the tick ends normally, and the daemon goes on ticking
    (the lost connection escaped ``tick`` and ended the daemon)."""
    backend, controller = make({"health": HEALTH | {"enable_autodeflate": True}})

    def lost(vm: str, change: object) -> None:
        raise ConnectionLostError("the connection dropped")

    monkeypatch.setattr(backend, "set_balloon", lost)
    tick(controller, backend, 10)
    remedies = journal(controller, "remedy")
    assert remedies and all(not e["applied"] and "dropped" in e["error"] for e in remedies)
    assert journal(controller, "action")  # the ticks went on


def test_windows_guest_floor_in_the_daemon() -> None:
    backend, controller = make({"health": {"enabled": True, "windows_min_fraction": 0.75}})
    tick(controller, backend, 600)
    storm = backend.guest("storm")
    assert storm.os_type == "windows"
    # Storm or not, a Windows guest never goes below 3 GiB (0.75 of 4 GiB); the Linux one goes below it.
    floors = {vm.name: vm.floor_bytes for vm in controller.status().vms}
    assert floors["storm"] == 3 * GiB and floors["busy"] is not None and floors["busy"] < 3 * GiB
    assert all(e["new_target"] >= 3 * GiB for e in journal(controller, "action", "storm"))
    assert min(e["new_target"] for e in journal(controller, "action", "busy")) < 3 * GiB


# --- list and release against a running daemon -----------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Any) -> Iterator[tuple[SimBackend, Controller, RunningServer, str]]:
    backend, controller = make({"manage": ["storm"]})
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server = serve_controller(controller, "127.0.0.1:0", token_file=token)
    try:
        tick(controller, backend, 120)
        server.on_tick()
        yield backend, controller, server, str(token)
    finally:
        server.stop()


def cli(capsys: pytest.CaptureFixture[str], uri: str, *args: str) -> tuple[int, str, str]:
    try:
        main(["--connect", uri, *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_reads_statuses_from_the_daemon(
    daemon: tuple[SimBackend, Controller, RunningServer, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend, _, server, _ = daemon
    monkeypatch.setattr(cli_module, "open_backend", lambda uri: backend)
    monkeypatch.setattr(backend, "close", lambda: None)
    code, out, _ = cli(capsys, backend.uri, "list", "--json", "--daemon", server.url)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["storm"]["status"] == "quarantined" and "--model none" in rows["storm"]["status_reason"]
    assert rows["busy"]["status"] == "excluded"  # outside the daemon's 'manage'
    code, out, _ = cli(capsys, backend.uri, "list", "--daemon", server.url)
    assert code == 0 and "quarantined" in out
    with urllib.request.urlopen(server.url + "metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'autoballoon_vm_status{host="sim-host",status="quarantined",vm="storm"} 1.0' in metrics
    assert 'autoballoon_host_shrink_paused{host="sim-host"} 0.0' in metrics
    # Another hypervisor's daemon is not asked: statuses come from the snapshot alone.
    code, out, _ = cli(capsys, "sim:///other", "list", "--json", "--daemon", server.url)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["storm"]["status"] == "managed" and rows["busy"]["status"] == "managed"


@contextlib.contextmanager
def ticking(controller: Controller, backend: SimBackend, server: RunningServer) -> Iterator[None]:
    """The daemon's loop in a thread, a tick every few real milliseconds (the server waits for one)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            controller.tick()
            server.on_tick()
            backend.clock.sleep(controller.config.interval_s)
            time.sleep(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_release_command(
    daemon: tuple[SimBackend, Controller, RunningServer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    backend, controller, server, token = daemon
    args = ("--daemon", server.url, "--api-token-file", token)
    code, _, err = cli(capsys, backend.uri, "release", "busy", *args)
    assert code == 2 and "not quarantined" in err
    with ticking(controller, backend, server):
        code, out, _ = cli(capsys, backend.uri, "release", "storm", *args)
    assert code == 0 and out.strip() == "storm: released"
    assert "storm" not in controller.quarantined
    code, _, err = cli(
        capsys, backend.uri, "release", "storm", "--daemon", "http://127.0.0.1:9", "--api-token-file", token
    )
    assert code == 1 and "no daemon" in err


def test_list_without_a_daemon_computes_what_it_can(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "sim:///demo", "list", "--json", "--daemon", "http://127.0.0.1:9")
    rows = json.loads(out)
    assert code == 0
    assert {r["status"] for r in rows} <= {"managed", "excluded", "no-stats"}
    assert any(r["status"] == "no-stats" and r["status_reason"] for r in rows)
