"""Cache-aware shrinking: a shrink into a guest's page cache that makes it re-read pages is stepped back.

The guest here has 3 GiB of page cache on top of its 1 GiB of anonymous memory, all counted as
available, as a Linux guest counts it. Its applications read the top ``HOT`` of its memory all the time:
below that size, every step the balloon takes is read back from disk (major faults). The policy must
find that edge in small steps, step back to where the guest was quiet, keep that size, and say so.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Literal

import numpy as np
import pytest

from autoballoon.model import GuestSnapshot
from autoballoon.policy import PolicyState, decide
from autoballoon.policy.default import refault
from autoballoon.policy.default.refault import PAGE_BYTES, Probe
from autoballoon.tunables import DEFAULT_TUNABLES as T
from autoballoon.units import GiB, MiB
from tests.helpers import inputs as no_inputs
from tests.helpers import make_guest, make_host

MAX = 4 * GiB
USED = 1 * GiB
#: Below this balloon size the guest's working set no longer fits: what the balloon takes is read back.
HOT = 3 * GiB
#: Major faults a quiet guest makes per second at its own pace.
BASE_RATE = 50


#: How the guest reads back what the balloon took: by faults on mapped files, by read() calls that go to
#: its disk (no fault at all: a database or a web server), or unseen (neither counter is known).
Via = Literal["faults", "disk", "unseen"]


def _guest(now: float, target: int, reads: int, via: Via) -> GuestSnapshot:
    g = make_guest(max_bytes=MAX, target=target, actual=target, used=USED, time=now, autodeflate=True)
    # What is not anonymous is page cache (none of it free), as on an aged guest.
    faults = {"faults": reads, "disk": 440, "unseen": None}[via]
    stats = replace(g.stats, free=16 * MiB, major_faults=faults)
    disk = reads * PAGE_BYTES if via == "disk" else None
    return replace(g, stats=stats, disk_read_bytes=disk)


def _run(seconds: float, via: Via = "faults") -> tuple[list[int], list[str], PolicyState]:
    """The daemon every 2 s on that guest; its targets, and the kinds of the events it raised with its
    actions' reasons (``action:REASON``)."""
    state, now, target, faults = PolicyState(), 0.0, MAX, 10_000
    targets: list[int] = []
    kinds: list[str] = []
    while now < seconds:
        plan, state = decide(make_host(_guest(now, target, faults, via), time=now), no_inputs(), state, T)
        kinds += [e.kind for e in plan.events] + [f"action:{a.reason}" for a in plan.actions]
        for a in plan.actions:
            target = a.new_target
        targets.append(target)
        now += 2.0
        evicted = max(0, HOT - target)  # the hot pages the balloon took are read back, over and over
        faults += int(BASE_RATE * 2.0 + evicted / PAGE_BYTES * 0.2)
    return targets, kinds, state


@pytest.mark.parametrize("via", ["faults", "disk"])
def test_a_shrink_into_the_hot_cache_is_stepped_back_to_where_the_guest_was_quiet(via: Via) -> None:
    targets, kinds, state = _run(1800.0, via)
    assert "refault" in kinds  # the journal says why, and so does the grow back (major faults this fast
    # are a pressure signal of their own, which is the first reason given; disk reads are not)
    assert {"faults": "action:pressure", "disk": "action:refault"}[via] in kinds
    assert min(targets) < HOT  # it went past the edge once...
    assert targets[-1] >= HOT  # ...and came back to where the guest was quiet, and stayed there
    assert all(x >= HOT for x in targets[targets.index(min(targets)) + 1 :])
    assert state.guests["vm"].probe.keep >= HOT


def test_steps_into_the_cache_start_small_and_each_is_judged_before_the_next() -> None:
    targets, _, _ = _run(600.0)
    cuts = [(i * 2.0, a - b) for i, (a, b) in enumerate(itertools.pairwise(targets)) if b < a]
    small = max(T.shrink_min_step_bytes, int(MAX * T.cache_shrink_step_fraction))
    assert cuts and cuts[0][1] <= small + MiB
    for (t0, before), (t1, after) in itertools.pairwise(cuts):
        assert t1 - t0 >= T.refault_settle_s  # judged (quiet for the settle time) before the next
        assert after <= 2 * before + MiB  # and each accepted step at most doubles the next


def test_a_guest_without_a_fault_counter_is_shrunk_at_the_normal_pace() -> None:
    targets, kinds, _ = _run(120.0, "unseen")
    assert "refault" not in kinds
    assert min(targets) < HOT - 256 * MiB  # nothing tells a step too far, so none is made smaller


def _judge(probe: Probe, counter: int, now: float, sdt: float = 10.0, fresh: bool = True) -> refault.Judged:
    """One guest's probe judged on a report with major-fault count ``counter`` taken at ``now``."""
    one = np.array
    faults = refault.Faults(one([counter]), one([True]), one([fresh]), one([sdt]), one([now]))
    return refault.judge(refault.probes([probe]), faults, now, T)


def test_faults_at_the_guests_own_pace_are_not_the_balloons() -> None:
    """A guest that faults steadily (its baseline) is judged by the faults above that pace only."""
    probe = Probe(base_rate=1000.0, base_for=T.refault_baseline_s, seen=0)
    probe = refault.shrunk(probe, 2 * GiB, 2 * GiB - 64 * MiB, 100.0, 100.0)
    judged = _judge(probe, 1000 * 10 + 20, 110.0)
    assert not judged.stepped_back[0] and judged.accuracy[0] > T.reclaim_accuracy_min
    judged = _judge(probe, 1000 * 10 + 2000, 110.0)
    assert judged.stepped_back[0] and judged.probes.keep[0] == 2 * GiB
    assert judged.accuracy[0] < T.reclaim_accuracy_min
    assert judged.probes.rows()[0] == Probe(
        base_rate=1000.0,
        base_for=T.refault_baseline_s,
        keep=2 * GiB,
        keep_until=110.0 + T.refault_memory_s,
        seen=1000 * 10 + 2000,
    )  # the probe is closed, its pace starts small again, the guest's own pace is kept


def test_the_kept_size_is_let_go_after_a_while() -> None:
    probe = Probe(keep=3 * GiB, keep_until=500.0)
    assert _judge(probe, 0, 499.0, fresh=False).probes.keep[0] == 3 * GiB
    assert _judge(probe, 0, 500.0, fresh=False).probes.keep[0] == 0


def test_probes_read_as_columns_come_back_as_they_were() -> None:
    rows = [
        Probe(),
        Probe(start=3 * GiB, taken=MiB, faults=7, since=1.5, last_step=2.0, keep_until=9.0, seen=8),
    ]
    assert refault.probes(rows).rows() == rows
    assert refault.probes([]).rows() == []
