"""``test:///default`` (libvirt's built-in fake host) through the CLI: list and info work.

Its numbers are static by construction: memoryStats() is synthesised from the balloon target (MemTotal =
target, MemAvailable = MemFree = target/2) with a constant last_update from 1989, so its stats always
look stale; the bulk stats call carries no balloon fields at all, which exercises the memoryStats()
fallback. No daemon is needed: the test driver lives inside the client process.
"""

from __future__ import annotations

from autoballoon.units import GiB
from tests.needs import need_module
from tests.rig.cli import cli_json

need_module("libvirt", "pip install 'autoballoon[libvirt]' (needs libvirt-dev and pkg-config)")

URI = "test:///default"


def test_list_shows_the_builtin_domain_with_static_stats() -> None:
    listing = cli_json("list", uri=URI)
    (test,) = [e for e in listing if e["name"] == "test"]
    assert test["state"] == "running"
    assert test["max_bytes"] == 8 * GiB
    assert test["actual_bytes"] == 2 * GiB
    assert test["guest_available_bytes"] == 1 * GiB  # libvirt "usable" = target / 2 on this driver


def test_info_maps_libvirt_names_to_the_model() -> None:
    info = cli_json("info", "test", uri=URI)
    stats = info["stats"]
    assert stats["total_bytes"] == 2 * GiB  # libvirt "available" is MemTotal
    assert stats["available_bytes"] == 1 * GiB  # libvirt "usable" is MemAvailable
    assert stats["disk_caches_bytes"] == 2 * GiB // 8
    assert info["persistent"] is True and info["balloon"]["model"] == "virtio"
