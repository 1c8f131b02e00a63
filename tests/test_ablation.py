"""Each rule of the default policy is needed: switched off, a named scenario fails (as in Xen squeezed's
tests). Each test runs its scenario in the simulator twice through the evaluation harness, once with
the policy as it is (the check passes) and once with the one rule removed (the same check fails).

Their scenarios are the files of ``scenarios/ablation/``, one per rule, each saying at its top what it
exercises and what goes wrong without the rule.

The rules: growth is paid only from memory free now; shrinking has a dead band; a guest without fresh
stats is never shrunk (and gets its memory back); a stuck balloon is detected and left alone; nobody
drops below its OOM floor before everyone has been cut to theirs; a guest just grown is not shrunk for a
while (the cooldown); a guest's cushion holds room for a first burst and for the largest jump it has
shown; a Windows guest is never shrunk below its floor; a grow the balloon did not follow is sent again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from autoballoon import safety
from autoballoon.constraints import MAX_SECONDS
from autoballoon.evaluate.metrics import Metrics
from autoballoon.evaluate.policies import DaemonPolicy
from autoballoon.evaluate.runner import Job, run_simulation
from autoballoon.evaluate.summary import kill_checks
from autoballoon.health import DEFAULT_HEALTH
from autoballoon.model import HostSnapshot
from autoballoon.policy import DefaultPolicy
from autoballoon.policy.default import allocate
from autoballoon.policy.default.columns import Columns
from autoballoon.policy.fill import fit_tiers, water_fill
from autoballoon.sim.engine import Simulation
from autoballoon.sim.scenario import load_scenario
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB

I64 = npt.NDArray[np.int64]

#: The ablations' scenarios: not in the public suite (``make evaluate`` reads only ``scenarios/*.toml``),
#: since each is built to make one rule bind, not to judge a policy. Each file says what it exercises.
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "ablation"


def measure(scenario: str, tunables: Tunables | None = None) -> tuple[Metrics, list[dict[str, int]]]:
    """The default policy over the scenario ``scenarios/ablation/<scenario>.toml``: its metrics, and every
    tick's targets (only the VMs moved)."""
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

    path = SCENARIOS / f"{scenario}.toml"
    result = run_simulation(load_scenario(path), Job(str(path), "autoballoon"), make)
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


def test_without_paying_growth_from_free_memory_the_host_is_overrun(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, _ = measure("growth-paid-from-free")
    assert kept.host_overrun_s == 0 and kept.oom_kills == 0

    def pay_everything(c: object, alloc: I64, pool: int, hard_pool: int) -> I64:
        return alloc

    monkeypatch.setattr(allocate, "pay_growth", pay_everything)
    ablated, _ = measure("growth-paid-from-free")
    print(f"host overrun: {kept.host_overrun_s:g} s with the rule, {ablated.host_overrun_s:g} s without")
    assert ablated.host_overrun_s >= 5


# --- the dead band -----------------------------------------------------------------------------------


def test_without_the_dead_band_targets_flap() -> None:
    _, kept = measure("dead-band")
    _, ablated = measure("dead-band", Tunables(shrink_dead_band_bytes=0, shrink_dead_band_fraction=0.0))
    moved, moved_without = sum(map(len, kept)), sum(map(len, ablated))
    print(f"target changes: {moved} with the dead band, {moved_without} without")
    # Targets chase the noise. (About 2.3 times as many moves: a shrink into the page cache waits for the
    # last step's judgement (see policy/default/refault.py), which damps the chase too.)
    assert moved_without > 2 * moved
    assert reversals(ablated) > 1.5 * reversals(kept)


# --- no shrink without fresh stats -------------------------------------------------------------------


def test_without_the_stale_stats_hold_a_blind_guest_is_oom_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, _ = measure("stale-stats-hold")
    assert kept.oom_kills == 0

    real = safety.hold_reason

    def only_missing_stats(guest: object, wall: float, t: Tunables) -> str | None:
        reason = real(guest, wall, t)  # type: ignore[arg-type]
        return None if reason is not None and "stale" in reason else reason

    monkeypatch.setattr(safety, "hold_reason", only_missing_stats)
    ablated, _ = measure("stale-stats-hold")
    print(f"OOM kills: {kept.oom_kills} with the hold, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0


# --- stuck detection ---------------------------------------------------------------------------------


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
    _, _, kept = measure_with_snapshots("stuck-detection")
    monkeypatch.setattr(safety, "is_stuck", lambda progress, now, t: False)
    _, _, ablated = measure_with_snapshots("stuck-detection")
    with_, without = stale_targets(kept, "wedged"), stale_targets(ablated, "wedged")
    print(f"ticks with a stale target: {with_:.0%} with stuck detection, {without:.0%} without")
    assert with_ < 0.1 < 0.8 < without


# --- the OOM floor -----------------------------------------------------------------------------------


def test_without_the_oom_floor_a_short_host_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, _ = measure("oom-floor")
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
    ablated, _ = measure("oom-floor")
    print(f"OOM kills: {kept.oom_kills} with the OOM floor, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0


# --- the shrink cooldown after a grow ----------------------------------------------------------------


def test_without_the_cooldown_after_a_grow_targets_flap() -> None:
    """A grow holds one reaction time of the rise the last report showed, and the demand dips and comes
    back within seconds: without the cooldown the next report's figures take that growth back at once,
    and the burst that returns grows it again (a shrink and a grow more per burst)."""
    _, kept = measure("shrink-cooldown")
    _, ablated = measure("shrink-cooldown", Tunables(shrink_cooldown_after_grow_s=0.0))
    with_, without = reversals(kept), reversals(ablated)
    print(f"direction changes: {with_} with the cooldown, {without} without")
    assert without > 1.5 * with_


# --- the burst room ----------------------------------------------------------------------------------


def test_without_the_first_burst_room_a_first_burst_is_oom_killed() -> None:
    kept, _ = measure("first-burst-room")
    assert kept.oom_kills == 0
    ablated, _ = measure("first-burst-room", Tunables(jump_prior_fraction=0.0, jump_prior_max_bytes=0))
    print(f"OOM kills: {kept.oom_kills} with the first-burst room, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0


def test_without_the_learned_jump_a_repeated_burst_is_oom_killed() -> None:
    kept, _ = measure("learned-jump")
    assert kept.oom_kills == 0
    # No rise counts as a jump: nothing is learned (the first-burst room stays).
    ablated, _ = measure("learned-jump", Tunables(jump_min_bytes=64 * GiB))
    print(f"OOM kills: {kept.oom_kills} with the learned jump, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0


# --- the Windows floor -------------------------------------------------------------------------------


def lowest_target(snapshots: list[HostSnapshot], vm: str) -> int:
    return min(g.target_bytes for s in snapshots if (g := s.guest(vm)) is not None)


def test_without_the_windows_floor_a_windows_guest_is_squeezed_below_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulator has no model of Windows paging, so the harm measured is the one the floor is the
    answer to: a target below what Windows is known to need, set on the word of stats that overstate
    what it can give up."""
    guard = DEFAULT_HEALTH
    (win,) = load_scenario(SCENARIOS / "windows-floor.toml").guests
    floor = safety.os_floor(
        win.policy,
        win.os,
        win.max,
        min_bytes=guard.windows_min_bytes,
        min_fraction=guard.windows_min_fraction,
    ).min_bytes
    assert floor is not None
    _, _, kept = measure_with_snapshots("windows-floor")
    monkeypatch.setattr(safety, "os_floor", lambda policy, os_type, max_bytes, **_: policy)
    _, _, ablated = measure_with_snapshots("windows-floor")
    with_, without = lowest_target(kept, "win"), lowest_target(ablated, "win")
    print(f"lowest target: {with_ / GiB:.2f} GiB with the floor, {without / GiB:.2f} GiB without")
    assert with_ >= floor >= without + 1 * GiB


# --- the grow retry ----------------------------------------------------------------------------------


def test_without_the_grow_retry_a_lost_grow_is_oom_killed() -> None:
    """The driver loses the grow, and the target the host reports says it was made: only sending it
    again, once requests arrive, gives the guest the memory before its next rise."""
    kept, _, seen = measure_with_snapshots("grow-retry")
    assert kept.oom_kills == 0
    # The grow was lost: the daemon's target stood above what the balloon held while requests were lost.
    lost = [g for s in seen if 300 < s.time < 400 and (g := s.guest("lost")) is not None]
    assert any(g.actual_bytes is not None and g.target_bytes - g.actual_bytes > 256 * MiB for g in lost)
    # A wait longer than any run: the grow is never sent again.
    ablated, _ = measure("grow-retry", Tunables(grow_retry_s=MAX_SECONDS))
    print(f"OOM kills: {kept.oom_kills} with the grow retry, {ablated.oom_kills} without")
    assert ablated.oom_kills > 0


# --- anticipation: pre-growth from the demand profile ------------------------------------------------


def test_without_anticipation_a_nightly_burst_is_oom_killed_every_night() -> None:
    """The nightly burst outruns the first-burst room and the remembered jump has faded by the next
    night: only the guest's schedule grows it in time. With pre-growth the recurring nights pass the
    acceptance's recurring-burst bars (no kill, a tenth of the first night's pressure at most) at the
    reclaim of the policy without it (within 5 % each day); switched off, they are killed again."""
    kept, _ = measure("anticipation")
    ablated, _ = measure("anticipation", Tunables(anticipation=False))
    for m in (kept, ablated):
        print(m.policy, [(d.day, d.bursts, d.oom_kills, round(d.pressure_vm_s), round(d.reclaimed_gib_h, 2))
                         for d in m.days])  # fmt: skip
    assert [d.bursts for d in kept.days] == ["first", "recurring", "recurring"]
    assert kept.days[0].oom_kills > 0  # the first night: nothing said it was coming
    assert all(c.ok for c in kill_checks("anticipation", kept))
    assert not all(c.ok for c in kill_checks("anticipation", ablated))
    assert all(d.oom_kills > 0 for d in ablated.days[1:])
    for on, off in zip(kept.days[1:], ablated.days[1:], strict=True):
        assert on.reclaimed_gib_h == pytest.approx(off.reclaimed_gib_h, rel=0.05)
