"""What the default policy remembers between decisions: a frozen record per VM, passed back by the caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from autoballoon.policy.default.profile import Profile
from autoballoon.policy.default.refault import Probe
from autoballoon.safety import Progress


class GuestRecord(NamedTuple):
    """What the policy remembers about one VM between decisions."""

    status: str = ""
    seen_time: float | None = None  # snapshot.time of the last look
    seen_target: int | None = None
    seen_actual: int | None = None
    planned_target: int | None = None  # what this policy set (or would have, in a dry run)
    demand: int | None = None  # smoothed demand estimate
    used: int | None = None  # ``used`` at the last stats report
    #: How much more than ``used`` the guest may have used then: stats taken while a shrink moved the
    #: balloon, read against its later size (see :func:`.estimate._used`).
    used_doubt: int = 0
    reserved: int = 0  # memory the guest's kernel keeps out of MemTotal (see :func:`kernel_reserved`)
    seen_wall: float | None = None  # snapshot.wall_time of the last look
    stats_time: float | None = None  # last_update of the stats the rates are measured from
    swap_in: int | None = None
    major_faults: int | None = None
    rise_rate: float = 0.0  # growth rate of ``used`` over the last report, bytes/s (0 if it fell)
    trend: float = 0.0  # the growth the last two reports agree on, bytes/s: the ramp going on now
    rate: float = 0.0  # remembered sustained growth rate, bytes/s, fading
    jump: int = 0  # remembered largest rise within one report, bytes, fading
    pressure_at: float | None = None  # last time a pressure signal was seen
    last_grow: float | None = None
    shrink_wall: float | None = None  # wall time of the last shrink: wait for stats newer than this
    progress: Progress | None = None  # the stuck detector's mark
    stuck_until: float | None = None  # a stuck balloon is left alone until then
    stuck_count: int = 0  # times in a row it was found stuck, without following a target in between
    manual_until: float | None = None  # a manual target is honoured until then
    retried_at: float | None = None  # when a grow that had not arrived was last sent again
    warned_autodeflate: bool = False
    warned_reporting: bool = False
    #: The balloon's ``actual`` the stats on hand were taken against (see :func:`estimate`).
    stats_actual: int | None = None
    probe: Probe = Probe()  # its shrinking into its page cache (see :mod:`.refault`)
    profile: Profile | None = None  # its demand by time of day and of week (see :mod:`.profile`)


FIRST_LOOK = GuestRecord()


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything the policy remembers. Start with ``PolicyState()``; always pass back the one returned."""

    guests: Mapping[str, GuestRecord] = field(default_factory=lambda: MappingProxyType({}))
    time: float | None = None
    #: The reserve the last plan spent: the ``host-reserve-spent`` event is given when it starts and ends.
    reserve_spent: int = 0
