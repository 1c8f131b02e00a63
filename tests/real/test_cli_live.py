"""The operator CLI against two real guests at once: live stats, setmem, and a refused setmem."""

from __future__ import annotations

from typing import Any

import pytest

from autoballoon.rig.domains import Guest
from autoballoon.units import MiB
from tests.rig.cli import cli_json, run_cli
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

FRESH_S = 5.0
ALLOC_MIB = 150
MIN_DROP = 100 * MiB
DEADLINE_S = 5.0
SETMEM_MIB = 200
GUEST_MIB = 512
#: The guest's MemTotal drops by exactly the balloon size; allow a few pages of rounding.
MEMTOTAL_SLACK = 4 * MiB


def entry(listing: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in listing if e["name"] == name]
    assert found, f"{name} missing from list --json: {[e['name'] for e in listing]}"
    return found[0]


def test_list_json_shows_both_guests_with_live_stats(guest_pair: list[Guest]) -> None:
    def fresh(listing: list[dict[str, Any]]) -> bool:
        return all(
            (age := entry(listing, g.name)["stats_age_s"]) is not None and age < FRESH_S for g in guest_pair
        )

    listing, _ = wait_for(lambda: cli_json("list"), fresh, 20, "fresh guest stats in list --json")
    for guest in guest_pair:
        e = entry(listing, guest.name)
        assert e["state"] == "running"
        assert e["max_bytes"] == GUEST_MIB * MiB
        assert e["balloon_model"] == "virtio"
        own = guest.control.meminfo()
        # libvirt's MemAvailable ("usable") is the guest's own, up to one stats period of drift.
        assert abs(e["guest_available_bytes"] - own["MemAvailable"]) < 32 * MiB


def test_available_drops_within_5s_of_a_150mib_allocation(guest_pair: list[Guest]) -> None:
    guest = guest_pair[0]
    before = entry(cli_json("list"), guest.name)["guest_available_bytes"]
    assert guest.control.alloc(ALLOC_MIB) == ALLOC_MIB
    try:
        after, elapsed = wait_for(
            lambda: entry(cli_json("list"), guest.name)["guest_available_bytes"],
            lambda v: before - v >= MIN_DROP,
            DEADLINE_S,
            f"guest_available_bytes of {guest.name} dropping by 100 MiB from {before}",
        )
    finally:
        guest.control.free_all()
    print(f"available dropped {(before - after) / MiB:.0f} MiB in {elapsed:.1f} s")


def test_setmem_live_moves_actual_and_guest_memtotal(guest_pair: list[Guest]) -> None:
    guest = guest_pair[1]
    boot_total = guest.control.meminfo()["MemTotal"]
    run_cli("setmem", guest.name, f"{SETMEM_MIB}M", "--live", check=True)
    try:
        info, elapsed = wait_for(
            lambda: cli_json("info", guest.name),
            lambda i: i["actual_bytes"] == SETMEM_MIB * MiB,
            DEADLINE_S,
            f"balloon actual of {guest.name} reaching {SETMEM_MIB} MiB",
        )
        print(f"actual reached {SETMEM_MIB} MiB in {elapsed:.1f} s")
        assert info["target_bytes"] == SETMEM_MIB * MiB
        drop = boot_total - guest.control.meminfo()["MemTotal"]
        assert abs(drop - (GUEST_MIB - SETMEM_MIB) * MiB) <= MEMTOTAL_SLACK, (
            f"MemTotal dropped {drop / MiB} MiB"
        )
    finally:
        run_cli("setmem", guest.name, f"{GUEST_MIB}M", "--live", check=True)
        wait_for(
            lambda: cli_json("info", guest.name)["actual_bytes"],
            lambda v: v == GUEST_MIB * MiB,
            DEADLINE_S * 2,
            "balloon back to full",
        )


def test_setmem_above_memory_exits_2_and_changes_nothing(guest_pair: list[Guest], rig: Any) -> None:
    guest = guest_pair[0]
    dom = rig.connection().lookupByName(guest.name)
    before_xml = dom.XMLDesc(0)
    before = cli_json("info", guest.name)
    done = run_cli("setmem", guest.name, f"{GUEST_MIB + 88}M", "--live")
    assert done.returncode == 2, done.stderr
    assert guest.name in done.stderr
    after = cli_json("info", guest.name)
    for key in ("max_bytes", "target_bytes", "actual_bytes"):
        assert after[key] == before[key], key
    assert dom.XMLDesc(0) == before_xml
