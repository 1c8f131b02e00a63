"""The model's derived values: what a guest really uses, stats age, policy merging."""

from __future__ import annotations

from autoballoon.model import BalloonConfig, GuestPolicy, GuestSnapshot, GuestStats, HostSnapshot, VMState
from autoballoon.units import GiB, MiB


def guest(**kw: object) -> GuestSnapshot:
    base: dict[str, object] = {
        "name": "g",
        "state": VMState.RUNNING,
        "max_bytes": 1024 * MiB,
        "target_bytes": 512 * MiB,
        "actual_bytes": 512 * MiB,
        "stats": GuestStats(total=512 * MiB, available=300 * MiB, last_update=100.0),
    }
    base.update(kw)
    return GuestSnapshot(**base)  # type: ignore[arg-type]


def test_used_is_total_minus_available() -> None:
    assert guest().used_bytes == 212 * MiB


def test_autodeflate_hides_the_balloon_in_memtotal_so_it_is_subtracted() -> None:
    # With deflate-on-oom, MemTotal stays at the boot size and ballooned pages count as used.
    g = guest(
        balloon=BalloonConfig(autodeflate=True),
        stats=GuestStats(total=1024 * MiB, available=300 * MiB, last_update=100.0),
    )
    assert g.used_bytes == (1024 - 300 - 512) * MiB


def test_missing_stats_mean_unknown_not_zero() -> None:
    g = guest(stats=GuestStats())
    assert g.used_bytes is None
    assert g.stats_age(200.0) is None
    assert not g.stats.present


def test_stats_age() -> None:
    assert guest().stats_age(130.5) == 30.5


def test_policy_merge_prefers_own_values_and_exclude_is_sticky() -> None:
    own = GuestPolicy(min_bytes=1 * GiB, shares=None, exclude=False)
    base = GuestPolicy(min_bytes=2 * GiB, shares=500, buffer=0.3, exclude=True)
    merged = own.merged_over(base)
    assert merged == GuestPolicy(min_bytes=1 * GiB, max_bytes=None, shares=500, buffer=0.3, exclude=True)


def test_host_sums_count_only_running_guests() -> None:
    off = guest(name="off", state=VMState.SHUTOFF, actual_bytes=None)
    h = HostSnapshot(
        time=0, wall_time=0, mem_total=2048 * MiB, mem_available=1024 * MiB, guests=(guest(), off)
    )
    assert h.sum_max == 1024 * MiB
    assert h.sum_actual == 512 * MiB
    assert h.overcommit_ratio == 0.5
    assert h.guest("off") is off and h.guest("nope") is None
