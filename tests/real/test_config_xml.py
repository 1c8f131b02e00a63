"""Configuration changes through the CLI, checked in the real domain XML (live and persistent)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from autoballoon.backends.libvirt.xml import POLICY_NS
from autoballoon.rig.domains import Guest, GuestSpec, restart
from autoballoon.units import KiB, MiB
from tests.real.conftest import Rig
from tests.rig.cli import cli_json, run_cli

pytestmark = pytest.mark.realvm


@pytest.fixture(scope="module")
def persistent_guest(rig: Rig) -> Iterator[Guest]:
    (guest,) = rig.boot([GuestSpec(persistent=True)])
    try:
        yield guest
    finally:
        rig.destroy(guest)


def xml_of(rig: Rig, name: str, *, inactive: bool) -> ET.Element:
    import libvirt

    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return ET.fromstring(rig.connection().lookupByName(name).XMLDesc(flags))


def balloon_el(root: ET.Element) -> ET.Element:
    el = root.find("./devices/memballoon")
    assert el is not None
    return el


def test_setvcpus_live_and_config(rig: Rig, persistent_guest: Guest) -> None:
    name = persistent_guest.name
    run_cli("setvcpus", name, "2", "--live", "--config", check=True)
    assert cli_json("info", name)["vcpus"] == 2
    vcpu = xml_of(rig, name, inactive=True).find("vcpu")
    assert vcpu is not None and vcpu.get("current", vcpu.text) == "2"
    refused = run_cli("setvcpus", name, "3", "--live")
    assert refused.returncode == 2 and name in refused.stderr
    assert cli_json("info", name)["vcpus"] == 2


def test_setmaxmem_config_changes_only_the_persistent_memory(rig: Rig, persistent_guest: Guest) -> None:
    name = persistent_guest.name
    run_cli("setmaxmem", name, "768M", "--config", check=True)
    assert xml_of(rig, name, inactive=True).findtext("memory") == str(768 * KiB)
    assert xml_of(rig, name, inactive=False).findtext("memory") == str(512 * KiB)  # fixed at boot


def test_balloon_switches_and_stats_period_round_trip(rig: Rig, persistent_guest: Guest) -> None:
    name = persistent_guest.name
    run_cli(
        "balloon",
        name,
        "--autodeflate",
        "on",
        "--free-page-reporting",
        "on",
        "--stats-period",
        "5",
        check=True,
    )
    cfg = balloon_el(xml_of(rig, name, inactive=True))
    assert cfg.get("autodeflate") == "on" and cfg.get("freePageReporting") == "on"
    stats = cfg.find("stats")
    assert stats is not None and stats.get("period") == "5"
    live = balloon_el(xml_of(rig, name, inactive=False))
    live_stats = live.find("stats")
    assert live_stats is not None and live_stats.get("period") == "5"  # applied to the running VM too
    assert live.get("autodeflate") is None  # a boot-time switch: not live
    shown = cli_json("info", name)["balloon"]
    assert shown["stats_period_s"] == 5
    run_cli(
        "balloon",
        name,
        "--autodeflate",
        "off",
        "--free-page-reporting",
        "off",
        "--stats-period",
        "1",
        check=True,
    )
    cfg = balloon_el(xml_of(rig, name, inactive=True))
    assert cfg.get("autodeflate") is None and cfg.get("freePageReporting") is None
    assert cfg.find("stats") is not None and cfg.find("stats").get("period") == "1"  # type: ignore[union-attr]


def _policy_el(root: ET.Element) -> ET.Element | None:
    return root.find(f"./metadata/{{{POLICY_NS}}}policy")


def test_policy_round_trips_through_the_domain_metadata(rig: Rig, persistent_guest: Guest) -> None:
    name = persistent_guest.name
    run_cli(
        "policy",
        name,
        "--min",
        "256M",
        "--max",
        "400M",
        "--shares",
        "300",
        "--buffer",
        "25%",
        "--exclude",
        check=True,
    )
    for inactive in (False, True):
        el = _policy_el(xml_of(rig, name, inactive=inactive))
        assert el is not None, f"no autoballoon policy in the {'persistent' if inactive else 'live'} XML"
        assert el.get("min") == str(256 * MiB) and el.get("max") == str(400 * MiB)
        assert el.get("shares") == "300" and float(el.get("buffer", "0")) == pytest.approx(0.25)
        assert el.get("exclude") == "yes"
    shown = json.loads(run_cli("policy", name, "--json", check=True).stdout)
    policy: dict[str, Any] = shown.get("policy", shown)
    assert policy["min_bytes"] == 256 * MiB and policy["max_bytes"] == 400 * MiB and policy["exclude"] is True
    run_cli("policy", name, "--include", check=True)
    assert cli_json("info", name)["policy"]["exclude"] is False
    assert cli_json("info", name)["policy"]["shares"] == 300


def test_model_none_means_no_balloon_device_at_next_boot(rig: Rig, make_guests: Any) -> None:
    import libvirt_qemu

    (guest,) = make_guests(1, persistent=True, autodeflate=True, free_page_reporting=True)
    done = run_cli("balloon", guest.name, "--model", "none", check=True)
    assert "next boot" in done.stdout + done.stderr
    cfg = balloon_el(xml_of(rig, guest.name, inactive=True))
    assert cfg.attrib == {"model": "none"} and list(cfg) == []
    assert (
        balloon_el(xml_of(rig, guest.name, inactive=False)).get("model") == "virtio"
    )  # still running as booted
    seconds = restart(rig.connection(), guest)
    print(f"rebooted without balloon in {seconds:.1f} s")
    assert balloon_el(xml_of(rig, guest.name, inactive=False)).get("model") == "none"
    dom = rig.connection().lookupByName(guest.name)
    # QEMU itself answers that there is no balloon (libvirt passes QMP errors back as a reply).
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-balloon"}', 0))
    assert reply.get("error", {}).get("class") == "DeviceNotActive", reply
    assert cli_json("info", guest.name)["balloon"]["model"] == "none"
