"""The QMP backend's pure parts: QEMU's replies (as QEMU 7.2 sends them), URIs, Proxmox configs, the
virtio-mem alignment, and the per-process readers of hostinfo."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from autoballoon import hostinfo
from autoballoon.backends import KNOWN_SCHEMES, open_backend, proxmox
from autoballoon.backends.qmp import uri as qmpuri
from autoballoon.backends.qmp import wire
from autoballoon.errors import BackendError, InvalidValueError
from autoballoon.model import BalloonConfig, GuestSnapshot, VirtioMem, VMState
from autoballoon.units import KiB, MiB
from tests.needs import need_module

ABSENT = 2**64 - 1
#: ``qom-get guest-stats`` from a QEMU 7.2 guest with Linux 6.1 (no hugetlb, no OOM stats).
GUEST_STATS = {
    "stats": {
        "stat-htlb-pgfail": 0,
        "stat-available-memory": 463527936,
        "stat-free-memory": 463753216,
        "stat-minor-faults": 1423,
        "stat-major-faults": 0,
        "stat-total-memory": 492560384,
        "stat-swap-in": 0,
        "stat-swap-out": 0,
        "stat-disk-caches": ABSENT,
        "stat-htlb-pgalloc": 0,
    },
    "last-update": 1795929540,
}


def test_guest_stats_are_bytes_with_qemus_names_and_absent_stays_none() -> None:
    s = wire.guest_stats(GUEST_STATS)
    assert (s.total, s.available, s.free) == (492560384, 463527936, 463753216)  # bytes, not KiB
    assert s.caches is None and s.oom_kills is None  # 2**64-1 on the wire, or not sent at all
    assert (s.minor_faults, s.swap_in, s.last_update) == (1423, 0, 1795929540.0)
    assert s.present


def test_stats_before_the_first_report_are_not_present() -> None:
    never = wire.guest_stats({"stats": {k: ABSENT for k in GUEST_STATS["stats"]}, "last-update": 0})  # type: ignore[attr-defined]
    assert never.last_update is None and not never.present
    assert wire.guest_stats(None) == wire.guest_stats({})


def test_run_states() -> None:
    assert wire.vm_state({"status": "running", "running": True}) is VMState.RUNNING
    assert wire.vm_state({"status": "inmigrate", "running": False}) is VMState.PAUSED
    assert wire.vm_state({"status": "shutdown"}) is VMState.SHUTDOWN
    assert wire.vm_state({"status": "guest-panicked"}) is VMState.CRASHED
    assert wire.vm_state({"status": "something-new"}) is VMState.UNKNOWN


def test_holds_for_migrations_and_paused_guests() -> None:
    running = {"status": "running", "running": True}
    assert wire.hold_reason(running, {}) is None
    assert wire.hold_reason(running, {"status": "completed"}) is None
    assert wire.hold_reason(running, {"status": "active"}) == "migrating out (active); held until it ends"
    assert wire.hold_reason({"status": "inmigrate"}, {}) == "migrating in; held until it runs again"
    assert wire.hold_reason({"status": "paused"}, None) == "paused; held until it runs again"


def test_vfio_devices_make_the_balloon_ineffective() -> None:
    entries = [
        {"name": "hostdev0", "type": "child<vfio-pci>"},
        {"name": "net0", "type": "child<virtio-net-pci>"},
    ]
    assert wire.passthrough_devices(entries) == ["hostdev0"]
    assert wire.passthrough_devices(None) == []


def test_devices_are_found_with_and_without_an_id() -> None:
    named = [{"name": "type", "type": "string"}, {"name": "vmem0", "type": "child<virtio-mem-pci>"}]
    anon = [{"name": "type", "type": "string"}, {"name": "device[0]", "type": "child<virtio-balloon-pci>"}]
    assert wire.child_paths("/machine/peripheral-anon", anon, wire.BALLOON_TYPES) == [
        "/machine/peripheral-anon/device[0]"
    ]
    assert wire.child_paths("/machine/peripheral", named, wire.BALLOON_TYPES) == []
    assert wire.child_paths("/machine/peripheral", named, wire.VIRTIO_MEM_TYPES) == [
        "/machine/peripheral/vmem0"
    ]


def test_virtio_mem_from_query_memory_devices() -> None:
    reply = [
        {"type": "dimm", "data": {"memaddr": 1}},
        {
            "type": "virtio-mem",
            "data": {
                "memdev": "/objects/vmem0-ram",
                "memaddr": 4294967296,
                "block-size": 2 * MiB,
                "size": 128 * MiB,
                "node": 0,
                "max-size": 512 * MiB,
                "requested-size": 256 * MiB,
                "id": "vmem0",
            },
        },
    ]
    devices = wire.virtio_mem_devices(reply)
    assert list(devices) == [4294967296]
    vmem = wire.virtio_mem(devices[4294967296], boot_bytes=512 * MiB)
    assert vmem == VirtioMem(2 * MiB, 128 * MiB, 256 * MiB, 512 * MiB, 512 * MiB)


def test_dimms_are_summed_from_query_memory_devices() -> None:
    reply = [
        {"type": "dimm", "data": {"size": 128 * MiB, "memaddr": 1}},
        {"type": "nvdimm", "data": {"size": 64 * MiB}},
        {"type": "virtio-mem", "data": {"size": 512 * MiB}},  # resized on its own, not under the balloon
        {"type": "dimm", "data": {"size": -1}},  # absent
        "junk",
    ]
    assert wire.dimm_bytes(reply) == 192 * MiB
    assert wire.dimm_bytes({"error": "odd"}) == 0 and wire.dimm_bytes([]) == 0


def test_virtio_mem_targets_round_up_to_a_block_within_the_region() -> None:
    vmem = VirtioMem(
        block_bytes=2 * MiB, plugged_bytes=0, requested_bytes=0, region_bytes=512 * MiB, boot_bytes=256 * MiB
    )
    assert vmem.requested_for(256 * MiB) == 0
    assert vmem.requested_for(100 * MiB) == 0  # below the boot memory: nothing plugged (the balloon's part)
    assert vmem.requested_for(256 * MiB + 1) == 2 * MiB  # never less than asked
    assert vmem.requested_for(300 * MiB) == 44 * MiB
    assert vmem.requested_for(301 * MiB) == 46 * MiB
    assert vmem.requested_for(10 * 1024 * MiB) == 512 * MiB


def test_balloon_value_is_what_qemu_steers_to() -> None:
    assert wire.balloon_value(512 * MiB, 300 * MiB) == 300 * MiB
    assert wire.balloon_value(512 * MiB, 300 * MiB + 1) == 300 * MiB + 4096  # whole pages, rounded up
    assert wire.balloon_value(512 * MiB, 600 * MiB) == 512 * MiB


def test_mechanism_per_guest() -> None:
    base = GuestSnapshot("g", VMState.RUNNING, 512 * MiB, 512 * MiB, 512 * MiB)
    assert base.mechanism == "balloon"
    report = GuestSnapshot(
        "g", VMState.RUNNING, 512 * MiB, 512 * MiB, 512 * MiB, balloon=BalloonConfig(free_page_reporting=True)
    )
    assert report.mechanism == "report"
    vmem = VirtioMem(2 * MiB, 0, 0, 512 * MiB, 512 * MiB)
    assert (
        GuestSnapshot("g", VMState.RUNNING, 1024 * MiB, 512 * MiB, 512 * MiB, virtio_mem=vmem).mechanism
        == "virtio-mem"
    )


# -- URIs ---------------------------------------------------------------------------------------------


def test_uri_forms() -> None:
    one = qmpuri.parse_uri("qmp:///run/vm1.qmp")
    assert (one.mode, one.path, one.hold) == (qmpuri.Mode.SOCKET, Path("/run/vm1.qmp"), False)
    many = qmpuri.parse_uri("qmp:///run/qemu/?glob=*.sock&hold=on")
    assert (many.mode, many.path, many.glob, many.hold) == (
        qmpuri.Mode.GLOB,
        Path("/run/qemu"),
        "*.sock",
        True,
    )
    pve = qmpuri.parse_uri("qmp:///run/qemu-server/")
    assert (pve.mode, pve.conf_dir, pve.glob) == (qmpuri.Mode.PROXMOX, proxmox.CONF_DIR, "*.qmp")
    assert qmpuri.parse_uri("proxmox://") == qmpuri.Location(
        qmpuri.Mode.PROXMOX, proxmox.RUN_DIR, "*.qmp", proxmox.CONF_DIR, False
    )
    custom = qmpuri.parse_uri("proxmox:///tmp/run?conf=/tmp/etc")
    assert (custom.path, custom.conf_dir) == (Path("/tmp/run"), Path("/tmp/etc"))
    assert qmpuri.parse_uri("qmp:///tmp/dir", is_dir=True).mode is qmpuri.Mode.PROXMOX


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("qmp://host/run/vm.qmp", "host"),
        ("qmp:///run/vm.qmp?bogus=1", "bogus"),
        ("qmp:///run/vm.qmp?hold=maybe", "maybe"),
        ("qmp:///run/vm.qmp?glob=*.qmp", "directory"),
        ("qmp:///run/?glob=a/b", "a/b"),
        ("qmp://", "path"),
        ("qmp:///run/vm.qmp?conf=/etc", "directory of sockets"),
        ("qmp:///run/?conf=relative", "absolute"),
        ("proxmox://?glob=*.qmp", "glob"),
        ("qmp:///run/a%00b.qmp", "NUL"),
        ("qmp:///run/?glob=*.qmp&conf=/a%00b", "NUL"),
    ],
)
def test_bad_uris_name_what_is_wrong(uri: str, named: str) -> None:
    with pytest.raises(InvalidValueError, match="expected") as err:
        qmpuri.parse_uri(uri)
    assert named in str(err.value)


def test_open_backend_knows_the_schemes(tmp_path: Path) -> None:
    assert "qmp:///" in KNOWN_SCHEMES and "proxmox://" in KNOWN_SCHEMES
    need_module("qemu.qmp", "pip install 'autoballoon[qmp]' (make test installs it)")
    with pytest.raises(BackendError, match="no directory"):
        open_backend(f"qmp://{tmp_path}/nowhere/?glob=*.qmp")
    with pytest.raises(BackendError, match=r"no Proxmox VM configs .*\?glob=\*\.qmp"):
        open_backend(f"qmp://{tmp_path}/")
    with pytest.raises(BackendError, match=r"vm\.qmp"):  # one socket that is not there: cannot connect
        open_backend(f"qmp://{tmp_path}/vm.qmp")
    with pytest.raises(InvalidValueError, match="NUL"):  # the OS's own error leaked, and a loop thread
        open_backend(f"qmp://{tmp_path}/a%00b.qmp")
    assert not [t for t in threading.enumerate() if t.name == "qmp-backend"]


# -- Proxmox configs ------------------------------------------------------------------------------------

CONF = """\
balloon: 1024
boot: order=scsi0;net0
cores: 2
memory: 4096
name: web01
ostype: l26
shares: 500
smbios1: uuid=2f1e8c56-0000-4000-8000-000000000101
vmgenid: 1b2c

[before-upgrade]
memory: 8192
name: old
"""


def test_proxmox_conf_maps_to_a_policy() -> None:
    conf = proxmox.parse_conf("101", CONF)
    assert (conf.name, conf.memory_bytes, conf.os_type) == (
        "web01",
        4096 * MiB,
        "linux",
    )  # not the snapshot's
    assert conf.uuid == "2f1e8c56-0000-4000-8000-000000000101"
    policy = conf.policy
    assert (policy.min_bytes, policy.shares, policy.exclude) == (1024 * MiB, 500, False)


def test_proxmox_balloon_off_defaults_and_odd_values() -> None:
    off = proxmox.parse_conf("102", "memory: current=2048\nballoon: 0\nostype: win11\n")
    assert (
        off.balloon_off and off.policy.exclude and off.memory_bytes == 2048 * MiB and off.os_type == "windows"
    )
    bare = proxmox.parse_conf("103", "name: x\n")
    assert (
        bare.memory_bytes == proxmox.DEFAULT_MEMORY
        and bare.policy.min_bytes is None
        and bare.os_type == "unknown"
    )
    odd = proxmox.parse_conf("104", "memory: lots\nballoon: -3\nshares: many\nostype: solaris\n")
    assert odd.memory_bytes == proxmox.DEFAULT_MEMORY and odd.shares is None and odd.os_type == "other"
    tiny = proxmox.parse_conf("107", "memory: 1024\nballoon: 64\nshares: 9000000\n")
    assert (tiny.policy.min_bytes, tiny.policy.shares) == (
        128 * MiB,
        1_000_000,
    )  # within autoballoon's ranges
    handed_over = proxmox.parse_conf("106", "memory: 1024\nballoon: 512\nshares: 0\n")
    assert handed_over.policy.shares is None and handed_over.policy.min_bytes == 512 * MiB
    capped = proxmox.parse_conf("105", "memory: 1024\nballoon: 4096\n")
    assert capped.policy.min_bytes == 1024 * MiB  # a floor above the maximum is the maximum


def test_proxmox_names_are_unique(tmp_path: Path) -> None:
    for vmid, text in {
        "101": "name: web\n",
        "102": "name: web\n",
        "103": "name: db\n",
        "104": "",
        "x": "",
    }.items():
        (tmp_path / f"{vmid}.conf").write_text(text)
    configs = proxmox.read_configs(tmp_path)
    assert sorted(configs) == ["101", "102", "103", "104"]
    assert proxmox.vm_names(configs) == {"101": "101", "102": "102", "103": "db", "104": "104"}


# -- hostinfo: per-process figures ----------------------------------------------------------------------


def test_rss_and_cpu_time_of_this_process() -> None:
    rss = hostinfo.process_rss(os.getpid())
    assert rss is not None and 10 * MiB < rss < 4096 * MiB
    assert hostinfo.parse_status_rss("Name:\tkthreadd\nState:\tS\n") is None
    assert hostinfo.parse_status_rss("VmRSS:\t  2048 kB\n") == 2048 * KiB
    assert hostinfo.process_rss(2**22 + 12345) is None  # no such process
    cpu = hostinfo.threads_cpu_ns(os.getpid(), [os.getpid()])
    assert cpu is not None and cpu > 0
    assert hostinfo.threads_cpu_ns(os.getpid(), [os.getpid(), 2**22 + 12345]) is None  # partial is unknown


def test_stat_line_with_parentheses_in_the_name() -> None:
    line = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 700 300 0 0 20 0 3 0 10 0 0"
    assert hostinfo.parse_stat_cpu_ticks(line) == 1000
    assert hostinfo.parse_stat_cpu_ticks("garbage") is None


def test_peer_pid_and_pidfile(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "s"))
    server.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "s"))
    try:
        assert hostinfo.peer_pid(client) == os.getpid()
    finally:
        client.close()
        server.close()
    (tmp_path / "q.pid").write_text("4242\n")
    (tmp_path / "bad.pid").write_text("x")
    assert hostinfo.read_pidfile(tmp_path / "q.pid") == 4242
    assert hostinfo.read_pidfile(tmp_path / "bad.pid") is None
    assert hostinfo.read_pidfile(tmp_path / "none.pid") is None


def test_each_vm_gets_a_name_of_its_own_when_names_and_file_names_collide(tmp_path: Path) -> None:
    """a.qmp and b.qmp both run ``-name x``, c.qmp runs ``-name a``: the two x fall back to their file
    names, of which ``a`` is c's already (a's monitor was lost, and the snapshot raised KeyError)."""
    from autoballoon.backends.qmp import backend as qb

    def monitor(stem: str, name: str) -> qb._Monitor:
        mon = qb._Monitor(tmp_path / f"{stem}.qmp")
        mon.facts = qb._Facts(name, None, False, False, 512 * MiB, None, None, None)
        return mon

    mons = [monitor("a", "x"), monitor("b", "x"), monitor("c", "a")]
    backend = qb.QmpBackend("qmp:///test/?glob=*.qmp", qmpuri.parse_uri(f"qmp://{tmp_path}/?glob=*.qmp"))
    try:
        names = backend._names(mons, {})
    finally:
        backend.close()
    assert sorted(map(id, names.values())) == sorted(map(id, mons))
    assert names["a"] is mons[2] and names["b"] is mons[1] and names[str(tmp_path / "a.qmp")] is mons[0]


def test_a_vm_that_runs_again_after_a_shutdown_is_no_longer_reported_shut_down(tmp_path: Path) -> None:
    """With ``-no-shutdown`` a QEMU outlives its guest's power-off; reset and ``cont`` run the guest
    again, which QEMU announces with RESUME (it stayed "shutdown" for as long as the process ran)."""
    import asyncio

    from autoballoon.backends.qmp import backend as qb

    async def events(names: list[str]) -> Any:
        for name in names:
            yield {"event": name, "data": {}}

    mon = qb._Monitor(tmp_path / "vm.qmp")
    mon.target = 256 * MiB
    backend = qb.QmpBackend("qmp:///test.qmp", qmpuri.parse_uri(f"qmp://{tmp_path}/vm.qmp"))
    try:
        asyncio.run(backend._watch(mon, events(["SHUTDOWN"])))  # type: ignore[arg-type]
        assert mon.shutdown and mon.target is None
        asyncio.run(backend._watch(mon, events(["RESUME"])))  # type: ignore[arg-type]
        assert not mon.shutdown
    finally:
        backend.close()


def test_disk_reads_are_summed_over_the_block_devices_qemu_reports() -> None:
    reply = [
        {"device": "", "node-name": "a", "stats": {"rd_bytes": 4096, "wr_bytes": 1}},
        {"device": "", "node-name": "b", "stats": {"rd_bytes": 8192}},
        {"device": "cd", "stats": {}},  # an empty drive: no counter
        "not an entry",
    ]
    assert wire.disk_read_bytes(reply) == 12288
    assert wire.disk_read_bytes([]) is None and wire.disk_read_bytes({"error": "odd"}) is None
    assert wire.disk_read_bytes([{"stats": {"rd_bytes": -1}}]) is None  # QEMU's "absent"
