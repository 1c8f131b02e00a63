"""Each rule of the default policy is needed: switched off, a named scenario fails (as in Xen squeezed's
tests). Each test runs its scenario in the simulator twice through the evaluation harness, once with
the policy as it is (the check passes) and once with the one rule removed (the same check fails).

The rules: growth is paid only from memory free now; shrinking has a dead band; a guest without fresh
stats is never shrunk (and gets its memory back); a stuck balloon is detected and left alone; nobody
drops below its OOM floor before everyone has been cut to theirs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from autoballoon import safety
from autoballoon.evaluate.metrics import Metrics
from autoballoon.evaluate.policies import DaemonPolicy
from autoballoon.evaluate.runner import Job, run_simulation
from autoballoon.model import HostSnapshot
from autoballoon.policy import DefaultPolicy
from autoballoon.policy.default import allocate
from autoballoon.policy.default.columns import Columns
from autoballoon.policy.fill import fit_tiers, water_fill
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import loads_scenario
from autoballoon.tunables import Tunables
from autoballoon.units import MiB

I64 = npt.NDArray[np.int64]


def measure(scenario: str, tunables: Tunables | None = None) -> tuple[Metrics, list[dict[str, int]]]:
    """The default policy over ``scenario``: its metrics, and every tick's targets (only the VMs moved)."""
    metrics, moves, _ = measure_with_snapshots(scenario, tunables)
    return metrics, moves


def measure_with_snapshots(
    scenario: str, tunables: Tunables | None = None
) -> tuple[Metrics, list[dict[str, int]], list[HostSnapshot]]:
    """:func:`measure`, and the snapshot the policy decided on at each tick."""
    moves: list[dict[str, int]] = []
    seen: list[HostSnapshot] = []

    class Recording(DaemonPolicy):
        def tick(self, now: float, snapshot: HostSnapshot | None) -> dict[str, int]:  # type: ignore[override]
            targets = super().tick(now, snapshot)
            assert isinstance(targets, dict) and snapshot is not None
            moves.append(dict(targets))
            seen.append(snapshot)
            return targets

    def make(sim: Simulation) -> DaemonPolicy:
        return Recording(DefaultPolicy(tunables or Tunables()))

    result = run_simulation(loads_scenario(scenario), Job("ablation", "autoballoon"), make)
    return result.metrics, moves, seen


def reversals(moves: list[dict[str, int]]) -> int:
    """How often a VM's target changed direction: a policy that flaps on noise reverses all the time."""
    last: dict[str, tuple[int, int]] = {}
    count = 0
    for tick in moves:
        for vm, target in tick.items():
            if vm in last:
                before, direction = last[vm]
                new_direction = int(np.sign(target - before))
                if new_direction and direction and new_direction != direction:
                    count += 1
                last[vm] = (target, new_direction or direction)
            else:
                last[vm] = (target, 0)
    return count


# --- growth is paid only from memory that is free now ----------------------------------------------

#: A small host: "idle" boots at its max and gives most of it back (its balloon inflates at about
#: 100 MiB/s, and its shrinking is paced), while "hungry" grows by 3 GiB within twenty seconds (it has
#: swap to wait in). The host cannot hold both at once.
GROWTH_WHILE_SHRINKING = """
[host]
ram = "8704M"
reserve = "512M"
base_used = "512M"
[run]
duration = 600
[[guest]]
name = "idle"
max = "6G"
demand = { shape = "constant", level = "512M" }
[[guest]]
name = "hungry"
max = "6G"
target = "1G"
demand = { shape = "ramp", from = "512M", to = "3584M", start = 20, length = 20 }
swap = "2G"
"""


def test_without_paying_growth_from_free_memory_the_host_is_overrun(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, _ = measure(GROWTH_WHILE_SHRINKING)
    assert kept.host_overrun_s == 0 and kept.oom_kills == 0

    def pay_everything(c: object, alloc: I64, pool: int, hard_pool: int) -> I64:
        return alloc

    monkeypatch.setattr(allocate, "pay_growth", pay_everything)
    ablated, _ = measure(GROWTH_WHILE_SHRINKING)
    print(f"host overrun: {kept.host_overrun_s:g} s with the rule, {ablated.host_overrun_s:g} s without")
    assert ablated.host_overrun_s >= 5


# --- the dead band -----------------------------------------------------------------------------------

#: Guests whose use wanders a few per cent around a steady level.
NOISY = """
[host]
ram = "64G"
[run]
duration = 3600
[[guest]]
name = "noisy"
count = 4
max = "8G"
autodeflate = true
demand = { shape = "constant", level = "3G", noise = 0.04 }
"""


def test_without_the_dead_band_targets_flap() -> None:
    _, kept = measure(NOISY)
    _, ablated = measure(NOISY, Tunables(shrink_dead_band_bytes=0, shrink_dead_band_fraction=0.0))
    moved, moved_without = sum(map(len, kept)), sum(map(len, ablated))
    print(f"target changes: {moved} with the dead band, {moved_without} without")
    # Targets chase the noise. (About 2.3 times as many moves: a shrink into the page cache waits for the
    # last step's judgement (see policy/default/refault.py), which damps the chase too.)
    assert moved_without > 2 * moved
    assert reversals(ablated) > 1.5 * reversals(kept)


# --- no shrink without fresh stats -------------------------------------------------------------------

#: A database's stats stop while its working set keeps growing (its balloon service died).
STATS_LOST = """
[host]
ram = "32G"
reserve = "1G"
[run]
duration = 3600
[[guest]]
name = "db"
max = "8G"
swap = "0"
policy = { min = "1G" }
demand = { shape = "steps", points = [[0, "1536M"], [1200, "3G"], [1800, "4G"]] }
[[event]]
at = 600
guest = "db"
stats = false
"""


def test_without_the_stale_stats_hold_a_blind_guest_is_oom_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, _ = measure(STATS_LOST)
    assert kept.oom_kills == 0

    real = safety.hold_reason

    def only_missing_stats(guest: object, wall: float, t: Tunables) -> str | None:
        reason = real(guest, wall, t)  # type: ignore[arg-type]
        return None if reason is not None and "stale" in reason else reason

    monkeypatch.setattr(safety, "hold_reason", only_missing_stats)
    ablated, _ = measure(STATS_LOST)
    print(f"OOM kills: {kept.oom_kills} with the hold, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0


# --- stuck detection ---------------------------------------------------------------------------------

#: A guest whose balloon driver is wedged (it never moves) beside guests managed as usual.
STUCK = """
[host]
ram = "24G"
reserve = "1G"
[run]
duration = 1800
[[guest]]
name = "wedged"
max = "8G"
target = "5G"
stuck = true
policy = { min = "1G" }
demand = { shape = "constant", level = "1G" }
[[guest]]
name = "busy"
count = 3
max = "8G"
target = "5G"
autodeflate = true
policy = { min = "1G" }
demand = { shape = "sine", mean = "3G", amplitude = "1G", period = 3600, noise = 0.03 }
"""


def stale_targets(snapshots: list[HostSnapshot], vm: str) -> float:
    """The share of ticks at which ``vm``'s target sat far (512 MiB) below what its balloon holds: a
    target the balloon would jump to the moment its driver recovered, whatever the guest needs then."""
    gaps = [g.actual_bytes - g.target_bytes for s in snapshots if (g := s.guest(vm)) and g.actual_bytes]
    return sum(gap > 512 * MiB for gap in gaps) / len(gaps)


def test_without_stuck_detection_a_wedged_balloon_keeps_a_stale_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stuck balloon's target is set back to where the balloon is and left alone (the budget then
    counts what it really holds); without the rule its target stays far below, waiting to strike."""
    _, _, kept = measure_with_snapshots(STUCK)
    monkeypatch.setattr(safety, "is_stuck", lambda progress, now, t: False)
    _, _, ablated = measure_with_snapshots(STUCK)
    with_, without = stale_targets(kept, "wedged"), stale_targets(ablated, "wedged")
    print(f"ticks with a stale target: {with_:.0%} with stuck detection, {without:.0%} without")
    assert with_ < 0.1 < 0.8 < without


# --- the OOM floor -----------------------------------------------------------------------------------

#: A host that comes to hold both guests' OOM floors but not their needs: a busy guest without swap
#: beside one that grows from idle.
SHORT = """
[host]
ram = "5700M"
reserve = "256M"
base_used = "256M"
[run]
duration = 900
[[guest]]
name = "busy"
max = "4G"
target = "3584M"
swap = "0"
demand = { shape = "constant", level = "3G" }
[[guest]]
name = "growing"
max = "4G"
target = "1G"
swap = "0"
demand = { shape = "ramp", from = "256M", to = "1536M", start = 300, length = 300 }
"""


def test_without_the_oom_floor_a_short_host_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, _ = measure(SHORT)
    assert kept.oom_kills == 0

    def needs_by_shares(c: Columns, pool: int, hard_pool: int, room: int) -> tuple[I64, int, bool]:
        """The share-out without the OOM-floor tier: when the needs do not fit, every guest gets the same
        share above its floor, whatever its demand."""
        fitted = fit_tiers([c.need.tolist(), c.want.tolist()], pool, c.shares)
        if fitted is not None:
            return np.array(fitted, dtype=np.int64), pool, False
        shared = water_fill(c.floor.tolist(), c.need.tolist(), c.shares, pool - int(c.floor.sum()))
        return np.array(shared, dtype=np.int64), pool, True

    monkeypatch.setattr(allocate, "goals", needs_by_shares)
    ablated, _ = measure(SHORT)
    print(f"OOM kills: {kept.oom_kills} with the OOM floor, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0
