"""The values every layer passes around: frozen, typed, in integer bytes.

Backends build these at their edge (libvirt KiB, QMP bytes, simulator arrays) and nothing above the
backends ever sees a backend-specific unit or name. ``None`` always means "the guest or hypervisor did
not report this"; it is never replaced by a guess here, because the guards decide what a missing value
means (a guest without stats is never shrunk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, NamedTuple, get_args

from autoballoon.constraints import MAX_BUFFER as MAX_BUFFER  # re-exported: callers import it from here
from autoballoon.constraints import Buffer, ConstraintError, GuestBytes, Shares, StatsPeriod, check_fields
from autoballoon.errors import LimitError
from autoballoon.units import format_size

BalloonModel = Literal["virtio", "virtio-transitional", "virtio-non-transitional", "xen", "none"]
#: The same names as a tuple, for checks and choices at run time (one list, so the two cannot drift).
BALLOON_MODELS: tuple[str, ...] = get_args(BalloonModel)

GuestOS = Literal["linux", "windows", "other", "unknown"]


class Status(StrEnum):
    """What autoballoon is doing with a VM, as shown in tables, the API and the journal."""

    MANAGED = "managed"  # the policy moves its target
    EXCLUDED = "excluded"  # never touched (policy exclude, no balloon, not running)
    NO_STATS = "no-stats"  # held at its target: never shrunk without fresh guest stats
    STUCK = "stuck"  # its balloon does not move toward the target; held, others balanced around it
    QUARANTINED = "quarantined"  # the health guard stopped ballooning it (e.g. CPU storm)
    MANUAL_HOLD = "manual-hold"  # its target was changed by hand; honoured for a grace period


class VMState(StrEnum):
    """Domain states, named as libvirt's ``virsh domstate`` prints them."""

    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    UNKNOWN = "unknown"

    @property
    def active(self) -> bool:
        """Whether QEMU is running for this domain (so its balloon can be moved live)."""
        return self in (VMState.RUNNING, VMState.BLOCKED, VMState.PAUSED, VMState.PMSUSPENDED)


@dataclass(frozen=True, slots=True)
class GuestStats:
    """What the guest's balloon driver reports. Cumulative counters are totals since guest boot."""

    total: int | None = None  # MemTotal (libvirt calls it "available"!)
    available: int | None = None  # MemAvailable (libvirt "usable")
    free: int | None = None  # MemFree (libvirt "unused")
    caches: int | None = None  # disk caches
    swap_in: int | None = None  # bytes, cumulative
    swap_out: int | None = None  # bytes, cumulative
    major_faults: int | None = None  # count, cumulative
    minor_faults: int | None = None  # count, cumulative
    oom_kills: int | None = None  # count, cumulative (newer QEMU/Linux only)
    last_update: float | None = None  # seconds on the host's wall clock (HostSnapshot.wall_time)

    @property
    def present(self) -> bool:
        """The guest has reported its memory at least once."""
        return self.total is not None and self.available is not None and bool(self.last_update)


@dataclass(frozen=True, slots=True)
class BalloonConfig:
    """The ``<memballoon>`` device as configured (live view for a running VM)."""

    model: str = "virtio"
    autodeflate: bool = False
    free_page_reporting: bool = False
    stats_period: int | None = None  # seconds; None or 0 = guest stats disabled

    @property
    def enabled(self) -> bool:
        return self.model != "none"


@dataclass(frozen=True, slots=True)
class VirtioMem:
    """A virtio-mem device: memory the host plugs into the guest, or unplugs from it, in whole blocks.

    The guest boots with ``boot_bytes`` of ordinary RAM (the balloon works on that) and the device adds
    up to ``region_bytes`` on top. The host asks for ``requested_bytes`` (a multiple of ``block_bytes``)
    and the guest driver plugs or unplugs blocks until ``plugged_bytes`` equals it. A guest with the
    device therefore has ``boot + plugged`` now and can have ``boot + region`` at most; a target on top
    of the boot memory is reached only in steps of ``block_bytes``.
    """

    block_bytes: int
    plugged_bytes: int
    requested_bytes: int
    region_bytes: int
    boot_bytes: int

    def requested_for(self, target_bytes: int) -> int:
        """The ``requested-size`` that gives the guest at least ``target_bytes`` in all (boot memory plus
        plugged blocks), within the device's region: rounded *up* to a block, so a policy's target is
        never cut short by the alignment."""
        above = max(0, target_bytes - self.boot_bytes)
        blocks = -(-above // self.block_bytes)
        return min(blocks * self.block_bytes, self.region_bytes // self.block_bytes * self.block_bytes)


#: How a guest gives memory back to the host (:attr:`GuestSnapshot.mechanism`).
Mechanism = Literal["balloon", "report", "virtio-mem"]


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """Per-VM policy. ``None`` fields fall back to the daemon's defaults.

    Each field is checked against its type's range when the policy is made (a few hundred ns), so a
    policy from any source (config, metadata, API, scenario) is valid wherever it is read. ``min_bytes``
    above ``max_bytes`` is refused where one source states both (:func:`check_policy`), not here: layers
    merge, and the guards let the ceiling win.
    """

    min_bytes: GuestBytes | None = None  # the floor: never balloon below this
    max_bytes: GuestBytes | None = None  # never give more than this (and never more than <memory>)
    shares: Shares | None = None  # weight in the water-fill when the host is short
    buffer: Buffer | None = None  # fraction kept above demand (0.2 = 20 %)
    exclude: bool = False  # never touch this VM

    def __post_init__(self) -> None:
        check_fields(self)

    def merged_over(self, base: GuestPolicy) -> GuestPolicy:
        """This policy with its unset fields taken from ``base`` (``exclude`` is sticky: either wins)."""
        return GuestPolicy(
            min_bytes=self.min_bytes if self.min_bytes is not None else base.min_bytes,
            max_bytes=self.max_bytes if self.max_bytes is not None else base.max_bytes,
            shares=self.shares if self.shares is not None else base.shares,
            buffer=self.buffer if self.buffer is not None else base.buffer,
            exclude=self.exclude or base.exclude,
        )

    def to_json(self) -> dict[str, int | float | bool | None]:
        return {
            "min_bytes": self.min_bytes,
            "max_bytes": self.max_bytes,
            "shares": self.shares,
            "buffer": self.buffer,
            "exclude": self.exclude,
        }


def check_policy(policy: GuestPolicy, vm: str = "", max_bytes: int | None = None) -> None:
    """What a policy's own type cannot check, for a policy one source states whole (a config section,
    metadata, an API request, a backend asked to store it): a minimum or maximum above the VM's
    ``<memory>`` (``max_bytes``, when the VM is known) and a minimum above the maximum. Merged layers may
    cross; the guards let the maximum win. The one consistency check, so that every door refuses the
    same policy with the same words."""
    if max_bytes is not None:
        for what, value in (("policy minimum", policy.min_bytes), ("policy maximum", policy.max_bytes)):
            if value is not None and value > max_bytes:
                raise LimitError(
                    vm, what, format_size(value), f"above the VM's <memory> {format_size(max_bytes)}"
                )
    if policy.min_bytes is not None and policy.max_bytes is not None and policy.min_bytes > policy.max_bytes:
        raise LimitError(
            vm,
            "policy minimum",
            format_size(policy.min_bytes),
            f"above the policy maximum {format_size(policy.max_bytes)}",
        )


@dataclass(frozen=True, slots=True)
class GuestSnapshot:
    """One VM at one instant."""

    name: str
    state: VMState
    max_bytes: int  # <memory>: the most the guest can ever have (fixed at boot)
    target_bytes: int  # <currentMemory>: the balloon target
    actual_bytes: int | None  # what the guest has now (None if the balloon never answered)
    stats: GuestStats = field(default_factory=GuestStats)
    balloon: BalloonConfig = field(default_factory=BalloonConfig)
    policy: GuestPolicy = field(default_factory=GuestPolicy)
    vcpus: int = 1
    max_vcpus: int = 1
    cpu_time_ns: int | None = None  # cumulative guest CPU time over all vCPUs
    #: Bytes the guest has read from its disks since it started, as the host counts them (cumulative):
    #: a guest that re-reads the page cache a balloon took from it reads from its disk, and a read() that
    #: misses the cache is no page fault, so the balloon's fault counters do not show it.
    disk_read_bytes: int | None = None
    os_type: GuestOS = "unknown"
    persistent: bool = True
    uuid: str | None = None
    #: Why the hypervisor says this VM must not be shrunk now (a migration or other job in progress,
    #: paused, host memory unknown), or None; the guards hold it at its target.
    hold: str | None = None
    #: Why its balloon cannot give memory back to the host (VFIO device, locked or hugepage memory),
    #: or None; the guards exclude it.
    incapable: str | None = None
    virtio_mem: VirtioMem | None = None  # the guest's virtio-mem device, if it has one
    host_rss_bytes: int | None = None  # the QEMU process's resident memory on the host (VmRSS)

    @property
    def mechanism(self) -> Mechanism:
        """How this guest gives memory back: ``virtio-mem`` (a device resized in blocks), ``report``
        (a balloon with free page reporting: the host gets free pages back without a cap) or
        ``balloon`` (the balloon alone: only what it takes is given back)."""
        if self.virtio_mem is not None:
            return "virtio-mem"
        if self.balloon.enabled and self.balloon.free_page_reporting:
            return "report"
        return "balloon"

    @property
    def used_bytes(self) -> int | None:
        """What the guest really uses: MemTotal - MemAvailable, less any balloon it counts as used.

        With ``deflate-on-oom`` the Linux driver leaves MemTotal alone, so the whole balloon (max - actual)
        shows as used (Linux drivers/virtio/virtio_balloon.c skips adjust_managed_page_count then;
        measured on the rig: MemAvailable falls by exactly what the balloon takes). Windows does the same
        (virtio-win#568: ballooned memory shows as in use while MemTotal stays at the boot size). Without
        either, MemTotal follows the balloon and nothing is subtracted: a MemTotal above ``actual`` is
        then only stats a period older than a balloon that just inflated. The policy, the tables, the
        API and the metrics all read this one figure, so they never disagree.
        """
        s = self.stats
        total, available = s.total, s.available
        if total is None or available is None:
            return None
        used = total - available
        actual = self.actual_bytes
        if actual is not None:
            if self.balloon.autodeflate:
                if self.max_bytes > actual:
                    used -= self.max_bytes - actual
            elif self.os_type == "windows" and total > actual:
                used -= total - actual
        return used if used > 0 else 0

    def stats_age(self, now_wall: float) -> float | None:
        """Seconds since the guest last reported, or None if it never did."""
        if not self.stats.present or self.stats.last_update is None:
            return None
        return max(0.0, now_wall - self.stats.last_update)


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """The host and all its VMs at one instant.

    ``time`` is the controller's clock (monotonic, or virtual in the simulator); ``wall_time`` is the
    clock guest stats are stamped with, so that stats age is ``wall_time - stats.last_update``.
    """

    time: float
    wall_time: float
    mem_total: int
    mem_available: int
    guests: tuple[GuestSnapshot, ...] = ()
    swap_total: int | None = None
    swap_free: int | None = None
    psi_some_avg10: float | None = None  # percent of time some task stalled on memory
    psi_full_avg10: float | None = None
    ksm_saved_bytes: int | None = None  # pages_sharing * page size
    ksm_running: bool | None = None
    load_avg1: float | None = None
    cpu_count: int = 1
    thermal_throttle_count: int | None = None  # sum over CPUs, cumulative
    hostname: str = ""
    #: Why the host's memory figures cannot be trusted (a remote host that reports none), or None.
    #: Every guest then carries a ``hold`` too: nothing shrinks, nothing grows beyond what is known free.
    hold: str | None = None
    #: The host kernel's low free watermarks, all zones together (``/proc/zoneinfo``), or None where
    #: they are not known (the simulator, a remote host): the host's hard minimum is drawn above them.
    watermark_bytes: int | None = None

    def guest(self, name: str) -> GuestSnapshot | None:
        for g in self.guests:
            if g.name == name:
                return g
        return None

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.guests]

    @property
    def sum_max(self) -> int:
        return sum(g.max_bytes for g in self.guests if g.state.active)

    @property
    def sum_target(self) -> int:
        return sum(g.target_bytes for g in self.guests if g.state.active)

    @property
    def sum_actual(self) -> int:
        return sum(g.actual_bytes or 0 for g in self.guests if g.state.active)

    @property
    def overcommit_ratio(self) -> float:
        """Sum of running VMs' ``<memory>`` over host RAM (1.0 = exactly full if all were at max)."""
        return self.sum_max / self.mem_total if self.mem_total else 0.0


class Action(NamedTuple):
    """One balloon change a policy wants, with the reason and the numbers behind it.

    (A NamedTuple rather than a frozen dataclass: a decision over 1,000 guests builds hundreds of these,
    and a NamedTuple is built in a third of the time.)"""

    vm: str
    old_target: int
    new_target: int
    reason: str
    demand: int | None = None
    available: int | None = None
    budget: int | None = None

    @property
    def direction(self) -> Literal["grow", "shrink", "none"]:
        if self.new_target > self.old_target:
            return "grow"
        if self.new_target < self.old_target:
            return "shrink"
        return "none"


@dataclass(frozen=True, slots=True)
class Event:
    """Something the operator must hear about, raised by a decision or the health guard.

    ``kind`` is the journal's kind (``status``, ``warning``, ``quarantine``, ``release``, ``pause``,
    ``resume``...); ``fields`` carries the figures behind it, journalled as they are.
    """

    vm: str | None
    kind: str
    message: str
    fields: Mapping[str, object] = field(default_factory=dict)


class GuestDecision(NamedTuple):
    """The figures a decision judged one VM by, for tables, the API and the dashboard (one per VM per
    tick: a NamedTuple, cheap to build)."""

    demand: int | None = None  # estimated demand (bytes)
    want: int | None = None  # what it should have: demand plus headroom plus its cushion
    floor: int | None = None
    ceiling: int | None = None
    pressure: bool = False
    oom_floor: int | None = None  # below this the guest, without swap or autodeflate, is OOM-killed
    need: int | None = None  # below this the guest is under pressure (demand, its growth, a headroom)
    used: int | None = None  # what the guest uses, as the decision read it (its kernel's reserve too)
    goal: int | None = None  # where the allocation heads its target (the target moves there in steps)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one decision produced: the actions to apply, each VM's status, and the events.

    A plan is final when it is made: the controller applies its actions as they are.
    """

    actions: tuple[Action, ...] = ()
    status: Mapping[str, str] = field(default_factory=dict)  # VM -> managed/excluded/no-stats/stuck/...
    status_reason: Mapping[str, str] = field(default_factory=dict)
    budget: int | None = None  # memory all ballooned VMs may hold together
    reserve: int | None = None  # host memory never handed to guests
    host_short: bool = False  # the budget could not hold every guest's want
    #: Bytes of the reserve the targets take to keep guests at their OOM floors (0: the reserve is whole).
    reserve_spent: int = 0
    guests: Mapping[str, GuestDecision] = field(default_factory=dict)
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class BalloonChange:
    """A requested edit of the persistent ``<memballoon>``; ``None`` leaves a field as it is.

    A known model and a stats period in its range are checked when the change is made, so that no door
    (CLI, operator actions, a backend) has to check them again.
    """

    model: str | None = None
    autodeflate: bool | None = None
    free_page_reporting: bool | None = None
    stats_period: StatsPeriod | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.model is not None and self.model not in BALLOON_MODELS:
            raise ConstraintError("model", self.model, "one of " + ", ".join(BALLOON_MODELS))

    @property
    def empty(self) -> bool:
        return (
            self.model is None
            and self.autodeflate is None
            and self.free_page_reporting is None
            and self.stats_period is None
        )


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """What a configuration change did: applied live now, and/or only at the next boot."""

    live: bool
    next_boot: bool
    message: str
