"""Host signal parsers on real-shaped kernel text, and the reader on a fake /proc + /sys tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon import hostinfo

MEMINFO = """\
MemTotal:       24608124 kB
MemFree:        22920344 kB
MemAvailable:   23800000 kB
Buffers:           81080 kB
SwapTotal:       1048572 kB
SwapFree:         524284 kB
HugePages_Total:       4
Hugepagesize:       2048 kB
"""

PSI = """\
some avg10=1.50 avg60=0.75 avg300=0.10 total=123456
full avg10=0.25 avg60=0.05 avg300=0.00 total=4567
"""


def test_meminfo_is_bytes_and_counts_stay_counts() -> None:
    info = hostinfo.parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 24608124 * 1024
    assert info["MemAvailable"] == 23800000 * 1024
    assert info["HugePages_Total"] == 4  # no unit: a count, not KiB
    assert "Bogus" not in hostinfo.parse_meminfo("Bogus: x kB\nnot a line\n")


def test_psi_both_lines() -> None:
    psi = hostinfo.parse_psi(PSI)
    assert psi is not None
    assert (psi.some_avg10, psi.some_avg60, psi.some_total_us) == (1.5, 0.75, 123456)
    assert (psi.full_avg10, psi.full_total_us) == (0.25, 4567)


def test_psi_without_full_line_and_garbage() -> None:
    psi = hostinfo.parse_psi(PSI.splitlines()[0])
    assert psi is not None and psi.full_avg10 is None and psi.some_avg300 == 0.1
    assert hostinfo.parse_psi("") is None
    assert hostinfo.parse_psi("some avg10=x avg60=1 avg300=1 total=1") is None


@pytest.mark.parametrize(
    ("text", "expected"), [("0.31 0.21 0.11 1/109 10151\n", 0.31), ("", None), ("x", None)]
)
def test_loadavg(text: str, expected: float | None) -> None:
    assert hostinfo.parse_loadavg(text) == expected


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


#: Two zones of a real /proc/zoneinfo, cut short (the per-CPU pagesets' "high:" must not count).
ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 2137
  pages free     3840
        boost    0
        min      16
        low      20
        high     24
        spanned  4095
  pagesets
    cpu: 0
              count: 0
              high:  0
Node 0, zone   Normal
  pages free     1000000
        boost    0
        min      16000
        low      20000
        high     24000
"""


def test_zoneinfo_sums_the_low_watermarks() -> None:
    assert hostinfo.parse_zoneinfo(ZONEINFO, 4096) == (20 + 20000) * 4096
    assert hostinfo.parse_zoneinfo("Node 0, zone DMA\n", 4096) is None
    assert hostinfo.parse_zoneinfo("        low      x\n", 4096) is None


def test_reader_on_fake_tree(tmp_path: Path) -> None:
    _write(tmp_path, "proc/meminfo", MEMINFO)
    _write(tmp_path, "proc/pressure/memory", PSI)
    _write(tmp_path, "proc/loadavg", "2.5 1 1 1/1 1\n")
    _write(tmp_path, "proc/zoneinfo", ZONEINFO)
    _write(tmp_path, "sys/kernel/mm/ksm/pages_sharing", "100\n")
    _write(tmp_path, "sys/kernel/mm/ksm/run", "1\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count", "3\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu1/thermal_throttle/package_throttle_count", "4\n")
    info = hostinfo.read_host_info(tmp_path)
    assert info.mem_total == 24608124 * 1024
    assert info.mem_available == 23800000 * 1024
    assert info.swap_free == 524284 * 1024
    assert info.psi is not None and info.psi.some_avg10 == 1.5
    assert info.ksm_running is True
    assert info.ksm_saved_bytes == hostinfo.ksm_saved_bytes(100, __import__("os").sysconf("SC_PAGE_SIZE"))
    assert info.load_avg1 == 2.5
    assert info.thermal_throttle_count == 7
    assert info.watermark_bytes == hostinfo.parse_zoneinfo(ZONEINFO, __import__("os").sysconf("SC_PAGE_SIZE"))


def test_reader_leaves_missing_signals_none(tmp_path: Path) -> None:
    _write(tmp_path, "proc/meminfo", "MemTotal: 1000 kB\nMemFree: 400 kB\n")
    info = hostinfo.read_host_info(tmp_path)
    assert info.mem_available == 400 * 1024  # no MemAvailable (old kernel): MemFree
    assert info.psi is None and info.ksm_running is None and info.ksm_saved_bytes is None
    assert info.load_avg1 is None and info.thermal_throttle_count is None and info.watermark_bytes is None


def test_reader_on_this_host() -> None:
    info = hostinfo.read_host_info()
    assert 0 < info.mem_available <= info.mem_total
