"""``autoballoon run`` as a subprocess on real guests: shrink idle guests, feed a growing one ahead of its
demand, let an autodeflate guest survive a sudden allocation, no OOM kill anywhere, restore on SIGTERM,
and a journal that explains every action.

Four 512 MiB guests (three plain, one with autodeflate) under a host budget of 1300 MiB, which cannot
hold them at their max (2 GiB). The daemon manages only these guests (config ``manage``), so other
tests' guests on the same libvirtd are never touched.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from autoballoon.journal import read_journal
from autoballoon.rig.domains import Guest
from autoballoon.units import KiB, MiB
from tests.real.conftest import Rig
from tests.rig.waiting import wait_for

pytestmark = pytest.mark.realvm

GUEST_MIB = 512
BUDGET_MIB = 1300
INTERVAL_S = 1.0
IDLE_BELOW_MIB = 360  # idle guests give back a good part: need, plus a cushion for a first burst
SHRINK_TIMEOUT_S = 120.0
GROW_MIB = 250
GROW_RATE_MIB_S = 25
SPIKE_MIB = 250
#: MemAvailable an autodeflate guest has again once its target followed its spike: twice what the policy
#: calls pressure, clear of it. How far the target must rise for that depends on where it was (a run
#: failed a bar of half the spike when an earlier over-estimate of the guest's demand had left it high):
#: the guest's own room is what the daemon promises.
FOLLOWED_ROOM_MIB = 64
#: Self-deflation is seen through libvirt once the guest's stats and balloon event came in (1 s period);
#: on 2 cores of TCG the QEMU of a guest deflating itself answers its monitor late (a follow was seen 3.7 s
#: after the rise), so a tick that reads it can overrun. A daemon that does not follow never gets there.
FOLLOW_SLACK_S = 3.0
EXIT_TIMEOUT_S = 30.0
KNOWN_REASONS = {
    "idle", "demand", "pressure", "floor", "max", "autodeflate", "stuck", "host-short", "host-danger",
    "demand (host-short)", "pressure (host-short)", "autodeflate (host-short)", "floor (host-short)",
    "restore-max", "retry",
}  # fmt: skip


def balloon(rig: Rig, guest: Guest) -> tuple[int, int]:
    """(current memory, actual) of a guest's balloon in bytes, straight from libvirt.

    For a running guest libvirt's current memory follows the balloon (it is updated from QEMU's
    balloon events), so both lag the daemon's target by the balloon's own speed.
    """
    dom = rig.connection().lookupByName(guest.name)
    stats = dom.memoryStats()
    return dom.info()[2] * KiB, stats.get("actual", 0) * KiB


def guest_used(guest: Guest, autodeflate: bool) -> int:
    """What the guest uses by its own /proc/meminfo (the balloon counts as used with autodeflate)."""
    info = guest.control.meminfo()
    return info["MemTotal"] - info["MemAvailable"]


@pytest.fixture
def daemon_setup(rig: Rig, make_guests: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    plain = make_guests(3)
    (deflating,) = make_guests(1, autodeflate=True)
    guests = [*plain, deflating]
    journal = tmp_path / "journal.jsonl"
    config = tmp_path / "autoballoon.toml"
    names = ", ".join(f'"{g.name}"' for g in guests)
    config.write_text(
        f"""
interval = {INTERVAL_S}
journal = "{journal}"
state = "{journal.with_name("state.json")}"
on_exit = "restore"
restore_to = "max"
manage = [{names}]
[host]
budget = "{BUDGET_MIB}MiB"
# Four TCG guests and whatever else runs on the rig's two CPUs can hold the load average above 2 per CPU:
# the hot-host pause would then stop the shrinks this test waits for (as in the QMP daemon test).
[health]
host_load_factor = 1000
"""
    )
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoballoon", "--connect", "qemu:///system", "run", "--config", str(config),
         "--no-http"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield plain, deflating, proc, journal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        print((tmp_path / "daemon.log").read_text())


def test_daemon_on_real_guests(rig: Rig, daemon_setup: Any) -> None:
    plain, deflating, proc, journal_path = daemon_setup
    guests = [*plain, deflating]
    grower, *_idle = plain

    # 1. Idle guests shrink toward demand + buffer, all of them within the budget.
    def all_small() -> list[int]:
        return [balloon(rig, g)[0] for g in guests]

    # Both at once: the guests can pass under IDLE_BELOW_MIB a tick before the last cut that fits them
    # into the budget lands (libvirt reports each balloon as it moves).
    targets, took = wait_for(
        all_small,
        lambda ts: all(t < IDLE_BELOW_MIB * MiB for t in ts) and sum(ts) <= BUDGET_MIB * MiB,
        SHRINK_TIMEOUT_S,
        "idle guests shrinking within the budget",
    )
    assert proc.poll() is None, "daemon died"
    assert sum(targets) <= BUDGET_MIB * MiB
    for g in plain:
        used = guest_used(g, autodeflate=False)
        target, actual = balloon(rig, g)
        assert actual > used, (g.name, actual, used)
    print(f"idle guests shrank below {IDLE_BELOW_MIB} MiB in {took:.0f} s: {[t // MiB for t in targets]}")

    # 2. One guest grows by 250 MiB at 25 MiB/s: its balloon deflates ahead of its demand, no OOM kill.
    assert grower.control.alloc(GROW_MIB, GROW_RATE_MIB_S) >= 0
    margins = []
    deadline = time.monotonic() + GROW_MIB / GROW_RATE_MIB_S + 10
    while time.monotonic() < deadline:
        used = guest_used(grower, autodeflate=False)
        _, actual = balloon(rig, grower)
        margins.append(actual - used)
        held = grower.control.held()
        if held["held"] >= GROW_MIB and len(margins) > 5:
            break
        time.sleep(0.2)
    held = grower.control.held()
    assert held["alive"] == 1 and held["held"] == GROW_MIB, held
    assert min(margins) > 0, f"the balloon fell behind the guest's demand: margins {margins}"
    target, actual = balloon(rig, grower)
    assert target >= (GROW_MIB + 32) * MiB
    print(
        f"grower: min margin {min(margins) // MiB} MiB ({len(margins)} samples), target {target // MiB} MiB"
    )

    # 3. An autodeflate guest survives a sudden 250 MiB allocation; its target follows within 2 ticks.
    wait_for(
        lambda: balloon(rig, deflating)[0], lambda t: t < IDLE_BELOW_MIB * MiB, 30, "deflating guest small"
    )
    before_target, _ = balloon(rig, deflating)
    start = time.monotonic()
    assert deflating.control.alloc(SPIKE_MIB) == SPIKE_MIB  # all at once: faster than any host loop
    # The guest deflated itself when its balloon rises above its target (the daemon's own growth raises
    # the balloon too, but never above the target): the target must reach that balloon within 2 ticks.
    # A guest that had room for the spike does not deflate itself; the daemon then grows it as the spike's
    # pages are touched, as fast as the budget lets the other guests give memory back (seen: 4 s on TCG).
    risen: tuple[float, int] | None = None  # when, and to what, the balloon first rose by itself
    caught_up_at = None
    followed_at = None
    while time.monotonic() - start < 20:
        target, actual = balloon(rig, deflating)
        now = time.monotonic()
        if risen is None and actual > target + 8 * MiB:
            risen = (now, actual)
        if risen is not None and caught_up_at is None and target >= risen[1] - 8 * MiB:
            caught_up_at = now
        if (
            target > before_target + 8 * MiB
            and target >= actual - 8 * MiB
            and deflating.control.meminfo()["MemAvailable"] >= FOLLOWED_ROOM_MIB * MiB
        ):
            followed_at = now
            break
        time.sleep(0.1)
    assert deflating.control.held()["alive"] == 1
    assert followed_at is not None, "the target never followed the guest's growth"
    if risen is not None:
        caught_up_at = caught_up_at or followed_at  # the balloon only rises: followed means caught up
        assert caught_up_at - risen[0] <= 2 * INTERVAL_S + FOLLOW_SLACK_S, "self-deflation not followed"
    print(f"autodeflate guest: target followed {followed_at - start:.1f} s after the allocation")

    # 4. No OOM kill in any guest.
    assert {g.name: g.control.oomkills() for g in guests} == {g.name: 0 for g in guests}

    # 5. SIGTERM with on_exit = "restore": every guest back at its max.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_TIMEOUT_S) == 0
    for g in guests:  # libvirt's figure is the balloon's own, so give it a moment to deflate
        wait_for(lambda g=g: balloon(rig, g)[0], lambda t: t == GUEST_MIB * MiB, 15, f"{g.name} restored")

    # 6. The journal explains every action.
    entries = read_journal(journal_path)
    actions = [e for e in entries if e["kind"] == "action"]
    assert actions
    names = {g.name for g in guests}
    for e in actions:
        assert e["vm"] in names
        assert e["reason"] in KNOWN_REASONS, e
        assert e["old_target"] != e["new_target"] and e["direction"] in ("grow", "shrink")
        assert e["applied"] is True and e["budget"] is not None and e["time"] > 0
        if e["reason"] in ("idle", "demand", "pressure"):
            assert e["demand"] is not None and e["available"] is not None, e
    for name in names:  # the journal accounts for each guest's final size: its last action set its max
        last = [e for e in actions if e["vm"] == name][-1]
        assert last["new_target"] == GUEST_MIB * MiB, last
    assert {e["vm"] for e in actions if e["reason"] == "restore-max"}  # some were given back on exit
    assert any(e["vm"] == grower.name and e["direction"] == "grow" for e in actions)
    kinds = {e["kind"] for e in entries}
    assert {"start", "stop", "warning"} <= kinds  # plain guests are warned about for lacking autodeflate
