"""The model's derived values: what a guest really uses, stats age, policy merging."""

from __future__ import annotations

import pytest

from autoballoon import ops
from autoballoon.backends import open_backend
from autoballoon.config import parse_config
from autoballoon.errors import InvalidValueError, LimitError
from autoballoon.model import (
    BalloonConfig,
    GuestPolicy,
    GuestSnapshot,
    GuestStats,
    HostSnapshot,
    VMState,
    check_policy,
)
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


def test_one_policy_check_refuses_in_the_same_words_at_every_door() -> None:
    """What a policy's type cannot check (min above max, a limit above the VM's ``<memory>``) is checked
    by one function; the config file, the operator's path (ops) and the simulator backend refuse with its
    words (the simulator had its own check, with other words and ranges its type already guaranteed)."""
    crossed = GuestPolicy(min_bytes=2 * GiB, max_bytes=GiB)
    too_big = GuestPolicy(min_bytes=9 * GiB)
    with pytest.raises(LimitError) as err:
        check_policy(crossed, "web")
    crossed_words = str(err.value)
    assert "policy minimum 2GiB" in crossed_words and "above the policy maximum 1GiB" in crossed_words
    check_policy(GuestPolicy(min_bytes=GiB), "web", 2 * GiB)  # one that fits passes
    with pytest.raises(LimitError, match=r"policy maximum 3GiB .*above the VM's <memory> 2GiB"):
        check_policy(GuestPolicy(max_bytes=3 * GiB), "web", 2 * GiB)

    sim = open_backend("sim:///demo?speed=max")
    web = sim.guest("web")
    for bad in (crossed, too_big):
        with pytest.raises(LimitError) as at_backend:
            sim.set_policy("web", bad)
        with pytest.raises(LimitError) as at_ops:
            ops.update_policy(sim, "web", min_bytes=bad.min_bytes, max_bytes=bad.max_bytes)
        with pytest.raises(LimitError) as alone:
            check_policy(bad, "web", web.max_bytes)
        assert str(at_backend.value) == str(at_ops.value) == str(alone.value)
    assert sim.get_policy("web") == web.policy  # nothing was stored

    with pytest.raises(InvalidValueError, match=r"'vm\.web\.min'.*above the policy maximum 1GiB"):
        parse_config({"vm": {"web": {"min": "2GiB", "max": "1GiB"}}})
