"""The health guard on real guests: ``autoballoon run`` as a subprocess quarantines a guest that burns its
CPU whenever it is ballooned, deflates it to its max, names the remedy in the journal and the log, and
with ``[health] disable_balloon = true`` applies ``model='none'`` to the persistent config only.

Two persistent 512 MiB guests (no autodeflate, so a balloon lowers the guest's MemTotal): ``sick`` runs
the rig agent's ``burncpu-when-ballooned`` (it spins a vCPU whenever its MemTotal is below the boot value),
``calm`` is idle. The daemon manages only these two (config ``manage``). Under TCG on a shared two-core
host a spinning vCPU may not reach 90 % of a host CPU, so the test config uses a lower CPU level.
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest

from autoballoon.journal import read_journal
from autoballoon.rig.domains import Guest
from autoballoon.units import KiB, MiB
from tests.real.conftest import Rig
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

GUEST_MIB = 512
INTERVAL_S = 1.0
SUSTAIN_S = 4
WINDOW_S = 60
QUARANTINE_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 30.0
#: Seconds (ticks) the quarantined guest is watched for any new balloon change.
WATCH_AFTER_S = 8.0


def current_memory(rig: Rig, guest: Guest) -> int:
    return int(rig.connection().lookupByName(guest.name).info()[2]) * KiB


def balloon_model(rig: Rig, guest: Guest, flags: int) -> str | None:
    xml = rig.connection().lookupByName(guest.name).XMLDesc(flags)
    el = ET.fromstring(xml).find("./devices/memballoon")
    return None if el is None else el.get("model")


def journal_entries(path: Path) -> list[dict[str, Any]]:
    return read_journal(path) if path.exists() else []


@pytest.fixture
def health_daemon(rig: Rig, make_guests: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    sick, calm = make_guests(2, persistent=True)
    sick.control.burncpu_when_ballooned(True)
    journal = tmp_path / "journal.jsonl"
    config = tmp_path / "autoballoon.toml"
    config.write_text(
        f"""
interval = {INTERVAL_S}
journal = "{journal}"
state = "{journal.with_name("state.json")}"
manage = ["{sick.name}", "{calm.name}"]
[health]
cpu_level = 0.6
baseline_margin = 0.3
sustain_s = {SUSTAIN_S}
window_s = {WINDOW_S}
baseline_min_s = 2
disable_balloon = true
"""
    )
    log_path = tmp_path / "daemon.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoballoon", "--connect", "qemu:///system", "run", "--config", str(config),
         "--no-http"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield sick, calm, proc, journal, log_path
    finally:
        sick.control.burncpu_when_ballooned(False)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        print(log_path.read_text())


def test_a_guest_that_burns_cpu_when_ballooned_is_quarantined(rig: Rig, health_daemon: Any) -> None:
    sick, calm, proc, journal, log_path = health_daemon

    # 1. The daemon balloons the sick guest, it spins, and the guard quarantines it.
    def quarantines() -> list[dict[str, Any]]:
        return [e for e in journal_entries(journal) if e["kind"] == "quarantine"]

    (event,), took = wait_for(quarantines, bool, QUARANTINE_TIMEOUT_S, "quarantine of the sick guest")
    assert proc.poll() is None, "daemon died"
    assert event["vm"] == sick.name
    remedy = f"autoballoon balloon {sick.name} --model none"
    assert event["remedy"] == remedy and remedy in event["message"]
    assert 0 < event["detect_s"] <= WINDOW_S + SUSTAIN_S
    print(
        f"real guest: quarantined {event['detect_s']:.1f} s after its first balloon change ({took:.0f} s in)"
    )
    entries = journal_entries(journal)
    first_shrink = next(e for e in entries if e.get("vm") == sick.name and e.get("direction") == "shrink")
    assert first_shrink["time"] < event["time"]

    # 2. It is deflated to its max, and never ballooned again.
    wait_for(lambda: current_memory(rig, sick), lambda m: m == GUEST_MIB * MiB, 30, "sick guest deflated")
    mark = len(journal_entries(journal))
    time.sleep(WATCH_AFTER_S)
    later = journal_entries(journal)[mark:]
    assert not [e for e in later if e.get("vm") == sick.name and e.get("direction") == "shrink"]
    actions = [e for e in journal_entries(journal) if e.get("vm") == sick.name and e["kind"] == "action"]
    assert actions[-1]["reason"] == "quarantine" and actions[-1]["new_target"] == GUEST_MIB * MiB
    # The calm guest was ballooned too, and is not blamed for anything.
    assert current_memory(rig, calm) < GUEST_MIB * MiB
    assert not [e for e in journal_entries(journal) if e["kind"] == "quarantine" and e["vm"] == calm.name]

    # 3. disable_balloon: model='none' in the persistent config, the live VM keeps its balloon.
    (applied,) = [e for e in journal_entries(journal) if e["kind"] == "remedy"]
    assert applied["vm"] == sick.name and applied["applied"] and "next boot" in applied["message"]
    assert balloon_model(rig, sick, libvirt.VIR_DOMAIN_XML_INACTIVE) == "none"
    assert balloon_model(rig, sick, 0) == "virtio"
    assert balloon_model(rig, calm, libvirt.VIR_DOMAIN_XML_INACTIVE) == "virtio"

    # 4. The log names the remedy too.
    assert remedy in log_path.read_text()
