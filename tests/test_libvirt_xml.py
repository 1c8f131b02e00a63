"""Domain XML parsing and editing, and libvirt stats mapping, on samples (no libvirt daemon needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from autoballoon.backends.libvirt import xml as lvxml
from autoballoon.errors import InvalidValueError, RefusedError
from autoballoon.model import BalloonChange, GuestPolicy
from autoballoon.units import GiB, KiB, MiB
from tests.needs import need_module

DOMAIN = """\
<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web1</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
    <autoballoon:policy xmlns:autoballoon="https://autoballoon.dev/xmlns/policy/1"
        min="268435456" shares="500" buffer="0.3" exclude="no"/>
  </metadata>
  <memory unit='GiB'>2</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <memballoon model='virtio' autodeflate='on'>
      <stats period='10'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
  </devices>
  <qemu:commandline><qemu:arg value='-no-user-config'/></qemu:commandline>
</domain>
"""


def test_parse_domain_sizes_vcpus_balloon_os_policy() -> None:
    cfg = lvxml.parse_domain(DOMAIN)
    assert cfg.name == "web1"
    assert cfg.max_bytes == 2 * 1024 * MiB  # unit='GiB' honoured
    assert cfg.target_bytes == 1048576 * KiB
    assert (cfg.vcpus, cfg.max_vcpus) == (2, 4)
    assert cfg.balloon.model == "virtio" and cfg.balloon.autodeflate and not cfg.balloon.free_page_reporting
    assert cfg.balloon.stats_period == 10
    assert cfg.os_type == "linux"
    assert cfg.policy == GuestPolicy(min_bytes=256 * MiB, shares=500, buffer=0.3)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("<features><hyperv/></features>", "windows"),
        ("<os><kernel>/boot/vmlinuz</kernel></os>", "linux"),
        ("", "unknown"),
        (
            "<metadata><l:libosinfo xmlns:l='http://libosinfo.org/xmlns/libvirt/domain/1.0'>"
            "<l:os id='http://microsoft.com/win/10'/></l:libosinfo></metadata>",
            "windows",
        ),
    ],
)
def test_guess_os(snippet: str, expected: str) -> None:
    cfg = lvxml.parse_domain(f"<domain><name>x</name><memory>1024</memory>{snippet}</domain>")
    assert cfg.os_type == expected


def test_no_memballoon_means_none_and_no_current_memory_means_max() -> None:
    cfg = lvxml.parse_domain("<domain><name>x</name><memory>1024</memory></domain>")
    assert cfg.balloon.model == "none" and not cfg.balloon.enabled
    assert cfg.target_bytes == cfg.max_bytes == 1024 * KiB


def test_malformed_policy_attributes_are_ignored_not_fatal() -> None:
    el = ET.fromstring("<policy min='lots' max='-5' shares='7' exclude='yes'/>")
    assert lvxml.policy_from_element(el) == GuestPolicy(shares=7, exclude=True)


@pytest.mark.parametrize(
    "attrs",
    [
        "shares='0'",  # accepted before: 0 meant "floor only" in one part of the policy, "1" in another
        "shares='1000001'",
        "min='1'",  # below the lowest target anybody may set (128 MiB)
        "buffer='nan'",
        "buffer='inf'",
        "buffer='11'",
        "min='" + "9" * 5000 + "'",
    ],
)
def test_policy_metadata_outside_the_policy_ranges_is_ignored(attrs: str) -> None:
    assert lvxml.policy_from_element(ET.fromstring(f"<policy {attrs}/>")) == GuestPolicy()


def test_policy_metadata_with_min_above_max_keeps_the_max() -> None:
    el = ET.fromstring(f"<policy min='{2 * GiB}' max='{GiB}'/>")
    assert lvxml.policy_from_element(el) == GuestPolicy(max_bytes=GiB)


def test_stats_period_outside_its_range_is_unset() -> None:
    xml = "<domain><name>x</name><memory>1024</memory><devices><memballoon model='virtio'>"
    assert (
        lvxml.parse_domain(xml + "<stats period='-3'/></memballoon></devices></domain>").balloon.stats_period
        is None
    )


def test_policy_round_trip_through_metadata_text() -> None:
    policy = GuestPolicy(min_bytes=128 * MiB, max_bytes=3 * GiB, shares=9, buffer=0.125, exclude=True)
    text = lvxml.policy_to_xml(policy)
    assert 'min="134217728"' in text and 'max="3221225472"' in text  # bytes as attributes
    assert lvxml.policy_from_xml(text) == policy
    assert lvxml.policy_from_xml(lvxml.policy_to_xml(GuestPolicy())) == GuestPolicy()


def _balloon(xml: str) -> ET.Element:
    el = ET.fromstring(xml).find("./devices/memballoon")
    assert el is not None
    return el


def test_model_none_strips_everything_libvirt_would_reject() -> None:
    edited = lvxml.apply_balloon_change(DOMAIN, BalloonChange(model="none"))
    el = _balloon(edited)
    assert el.attrib == {"model": "none"} and list(el) == []
    # The rest of the document survives, with its own namespace prefixes.
    assert "qemu:commandline" in edited and "ns0:" not in edited
    assert lvxml.parse_domain(edited).policy.shares == 500


def test_switches_and_stats_period() -> None:
    edited = lvxml.apply_balloon_change(
        DOMAIN, BalloonChange(autodeflate=False, free_page_reporting=True, stats_period=3)
    )
    balloon = lvxml.parse_domain(edited).balloon
    assert (balloon.autodeflate, balloon.free_page_reporting, balloon.stats_period) == (False, True, 3)
    assert _balloon(edited).find("address") is not None  # untouched
    off = lvxml.parse_domain(lvxml.apply_balloon_change(edited, BalloonChange(stats_period=0))).balloon
    assert off.stats_period is None


def test_none_to_virtio_with_stats() -> None:
    none = lvxml.apply_balloon_change(DOMAIN, BalloonChange(model="none"))
    back = lvxml.parse_domain(lvxml.apply_balloon_change(none, BalloonChange(model="virtio", stats_period=5)))
    assert back.balloon.model == "virtio" and back.balloon.stats_period == 5


def test_refusals_name_the_vm() -> None:
    none = lvxml.apply_balloon_change(DOMAIN, BalloonChange(model="none"))
    with pytest.raises(RefusedError, match=r"web1.*autodeflate"):
        lvxml.apply_balloon_change(none, BalloonChange(autodeflate=True))
    with pytest.raises(InvalidValueError, match=r"bogus.*expected one of virtio"):
        BalloonChange(model="bogus")  # a change that cannot be applied anywhere cannot be made
    with pytest.raises(InvalidValueError, match=r"stats_period -1.*from 0 to 86400"):
        BalloonChange(stats_period=-1)


def test_describe_change() -> None:
    before = lvxml.parse_domain(DOMAIN).balloon
    after = lvxml.parse_domain(lvxml.apply_balloon_change(DOMAIN, BalloonChange(model="none"))).balloon
    assert lvxml.describe_balloon_change(before, after) == [
        "model virtio -> none",
        "autodeflate off",
        "stats period 0 s",
    ]
    assert lvxml.describe_balloon_change(before, before) == []


def test_stats_mapping_renames_and_converts() -> None:
    need_module("libvirt", "pip install 'autoballoon[libvirt]'")  # stats names libvirt's state constants
    from autoballoon.backends.libvirt import stats as lvstats

    bulk = {
        "state.state": 1,
        "balloon.current": 204800,
        "balloon.maximum": 524288,
        "balloon.available": 481016,  # MemTotal
        "balloon.usable": 352016,  # MemAvailable
        "balloon.unused": 352244,  # MemFree
        "balloon.disk_caches": 3104,
        "balloon.swap_in": 2,
        "balloon.major_fault": 7,
        "balloon.last-update": 1795727999,
        "vcpu.current": 1,
        "vcpu.maximum": 2,
        "cpu.time": 3055198000,
    }
    raw = lvstats.unprefix_bulk(bulk)
    s = lvstats.guest_stats(raw)
    assert (s.total, s.available, s.free) == (481016 * KiB, 352016 * KiB, 352244 * KiB)
    assert s.caches == 3104 * KiB and s.swap_in == 2 * KiB and s.major_faults == 7
    assert s.swap_out is None and s.oom_kills is None  # absent stays absent
    assert s.last_update == 1795727999.0
    assert lvstats.actual_bytes(raw) == 204800 * KiB and lvstats.maximum_bytes(raw) == 524288 * KiB
    assert lvstats.maximum_bytes({"maximum": 2**64 - 1}) is None and lvstats.maximum_bytes({}) is None
    assert lvstats.vm_state(bulk) is not None and lvstats.vm_state(bulk).value == "running"
    assert lvstats.vcpu_counts(bulk) == (1, 2) and lvstats.cpu_time_ns(bulk) == 3055198000
    assert lvstats.has_balloon_fields(bulk) and not lvstats.has_balloon_fields({"state.state": 1})
    never = lvstats.guest_stats({"available": 2**64 - 1, "last_update": 0})
    assert never.total is None and never.last_update is None and not never.present
