"""The QEMU process's RSS and the reclaim mechanism in every view: ``list --json``/the API rows, ``info``,
``host``, and ``/metrics`` (its own gauge and the ``host_rss`` reclaim measure)."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.core import Metric

from autoballoon.model import BalloonConfig, GuestSnapshot, HostSnapshot, VirtioMem, VMState
from autoballoon.server import metrics
from autoballoon.server.source import ServerView
from autoballoon.units import GiB, MiB
from autoballoon.views import LIST_FIELDS, guest_detail, guest_row, host_view

VMEM = VirtioMem(
    block_bytes=2 * MiB, plugged_bytes=64 * MiB, requested_bytes=64 * MiB, region_bytes=GiB, boot_bytes=GiB
)


def guests() -> tuple[GuestSnapshot, ...]:
    return (
        GuestSnapshot("plain", VMState.RUNNING, 2 * GiB, GiB, GiB, host_rss_bytes=700 * MiB),
        GuestSnapshot(
            "report",
            VMState.RUNNING,
            2 * GiB,
            2 * GiB,
            2 * GiB,
            balloon=BalloonConfig(free_page_reporting=True),
            host_rss_bytes=300 * MiB,
        ),
        GuestSnapshot("vmem", VMState.RUNNING, 2 * GiB, GiB + 64 * MiB, GiB + 64 * MiB, virtio_mem=VMEM),
        GuestSnapshot("off", VMState.SHUTOFF, 2 * GiB, 2 * GiB, None),
    )


def snapshot() -> HostSnapshot:
    return HostSnapshot(
        time=1.0, wall_time=1.0, mem_total=16 * GiB, mem_available=8 * GiB, guests=guests(), hostname="h"
    )


def test_rows_carry_rss_and_mechanism() -> None:
    snap = snapshot()
    rows = {g.name: guest_row(g, snap.wall_time) for g in snap.guests}
    assert list(rows["plain"]) == list(LIST_FIELDS)
    assert (rows["plain"]["host_rss_bytes"], rows["plain"]["mechanism"]) == (700 * MiB, "balloon")
    assert rows["report"]["mechanism"] == "report" and rows["vmem"]["mechanism"] == "virtio-mem"
    assert rows["vmem"]["host_rss_bytes"] is None
    detail = guest_detail(snap.guests[2], snap.wall_time)
    assert detail["virtio_mem"] == {
        "block_bytes": 2 * MiB,
        "plugged_bytes": 64 * MiB,
        "requested_bytes": 64 * MiB,
        "region_bytes": GiB,
        "boot_bytes": GiB,
    }
    assert guest_detail(snap.guests[0], snap.wall_time)["virtio_mem"] is None


def test_host_sum_of_rss_only_when_every_running_vm_has_one() -> None:
    snap = snapshot()
    assert host_view(snap)["sum_host_rss_bytes"] is None  # "vmem" has none: no partial sum
    known = replace(snap, guests=tuple(g for g in snap.guests if g.name != "vmem"))
    assert host_view(known)["sum_host_rss_bytes"] == 1000 * MiB  # the stopped VM does not count


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "host"))): s.value
        for f in families
        for s in f.samples
    }


def test_metrics_gauge_and_reclaim_measure() -> None:
    got = samples(metrics.vm_families(ServerView(snapshot=snapshot()), None, "h"))
    assert got[("autoballoon_vm_host_rss_bytes", (("vm", "plain"),))] == 700 * MiB
    assert ("autoballoon_vm_host_rss_bytes", (("vm", "vmem"),)) not in got
    assert (
        got[("autoballoon_vm_reclaimed_bytes", (("measure", "host_rss"), ("vm", "plain")))]
        == 2 * GiB - 700 * MiB
    )
    assert got[("autoballoon_vm_reclaimed_bytes", (("measure", "balloon"), ("vm", "report")))] == 0
    # Free page reporting: the balloon holds nothing back, the host got 1.7 GiB back all the same.
    assert (
        got[("autoballoon_vm_reclaimed_bytes", (("measure", "host_rss"), ("vm", "report")))]
        == 2 * GiB - 300 * MiB
    )
    assert metrics.host_reclaimed(snapshot()) == {"balloon": 2 * GiB - 64 * MiB}  # host_rss has a gap
