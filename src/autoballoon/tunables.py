"""Every number the default policy, the guards and the controller use, in one frozen value.

Keeping them here (and nowhere else) means an operator can override any of them from the config file's
``[tunables]`` table, the evaluation harness can sweep them, and a reader sees in one place what the
daemon's behaviour depends on. Sizes are integer bytes (fields end in ``_bytes``), times are float
seconds (``_s``), fractions are floats (0.2 = 20 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from autoballoon.constraints import (
    Buffer,
    Bytes,
    BytesPerS,
    Count,
    Fraction,
    GuestBytes,
    Order,
    PositiveBytes,
    PositiveSeconds,
    Rate,
    Seconds,
    Shares,
    check_fields,
)
from autoballoon.units import GiB, KiB, MiB

#: Rules between fields (see :func:`autoballoon.constraints.check_fields`).
_ORDERED: tuple[Order, ...] = (
    ("interval_s", ">=", "min_interval_s"),
    ("reconnect_max_s", ">=", "reconnect_initial_s"),
    ("stuck_retry_max_s", ">=", "stuck_retry_s"),
)


@dataclass(frozen=True, slots=True)
class Tunables:
    """The knobs of the default balloon policy. The defaults favour "no harm" over the last MiB reclaimed."""

    # --- what a guest should get -------------------------------------------------------------------
    #: Fraction of demand kept above it at the least (Hyper-V's default memory buffer is 20 %). The
    #: cushion below is usually larger; a VM's own ``buffer`` policy raises this one.
    buffer: Buffer = 0.20
    #: Memory a guest needs beyond its demand not to be under pressure: the kernel's free watermarks,
    #: the page cache its programs run from, what MemAvailable overstates, and some room above its OOM
    #: floor (``oom_margin``), so that a host short enough to cut guests to their needs does not leave
    #: them on the edge of an OOM kill that a demand read a stats period ago cannot see.
    min_headroom_bytes: Bytes = 96 * MiB
    #: Below ``demand + oom_margin`` a guest without swap is OOM-killed: the MemAvailable a guest still
    #: reports when its OOM killer fires. That is the file pages it cannot give up (its programs; the
    #: simulator models 32 MiB on a server) plus the kernel's min watermark (sqrt(16 x RAM in KiB): 3 MiB
    #: at 512 MiB, 16 MiB at 16 GiB); on the rig's initramfs guests it fired with 14-24 MiB still shown,
    #: and an allocation at once survived while it left a quarter of MemAvailable. For a guest without
    #: swap, being short of memory is not pressure but an OOM kill; and ``used`` read from stats a period
    #: old wanders by some MiB.
    oom_margin_bytes: Bytes = 56 * MiB
    #: ... and this share of its maximum more (on the headroom too): the watermark and the file pages
    #: grow with the guest, and so does what its workload wanders by between two stats reports.
    oom_margin_fraction: Fraction = 0.005
    #: The lowest target ever set, whatever a VM's own ``min`` says: below this Linux guests thrash.
    global_min_bytes: GuestBytes = 128 * MiB
    #: Targets are rounded to this (libvirt speaks KiB; a MiB grain keeps the journal readable).
    target_align_bytes: PositiveBytes = 1 * MiB
    #: Weight of a VM in the water-fill when it has none of its own (Proxmox's default is 1000).
    default_shares: Shares = 1000

    # --- the cushion: what one reaction time can bring ---------------------------------------------
    # A guest's cushion (its want above its need) must hold whatever it can allocate before the daemon
    # sees it and its balloon deflates: one reaction time, ``interval + stats period + actuation``.
    # Growth is never rate-limited, but it cannot come sooner than that; a guest that outgrows its
    # cushion within one reaction time is OOM-killed if it has no swap and no autodeflate.
    #: Seconds a reaction takes beyond the tick and the stats period: the stats' own delay (libvirt's
    #: figure trailed the guest's by up to 0.25 s beyond the period) and the balloon deflating (about
    #: 2 GiB/s on the rig). ``make realbench``'s calibration: a daemon ticking every 2 s on stats every
    #: second gave a guest its memory back 0.1-3.6 s after its allocation.
    actuation_s: Seconds = 0.6
    #: The stats period assumed for a guest whose period is not known (libvirt reports none over QMP).
    default_stats_period_s: Seconds = 10.0
    #: Growth every guest's cushion covers for one reaction time before any growth was seen. A faster
    #: ramp is seen within two stats reports and projected ahead from then on (``trend_lookahead_s``):
    #: on the rig, a guest left 128 MiB of MemAvailable survived ramps of 10 to 80 MiB/s under a daemon
    #: ticking every 2 s (``autoballoon evaluate --real --calibrate``).
    growth_allowance_bytes_per_s: BytesPerS = 32 * MiB
    #: A first sudden allocation of this share of a guest's maximum (but at most ``jump_prior_max``)
    #: fits in its cushion: nothing about a guest says in advance how big its first burst will be.
    jump_prior_fraction: Fraction = 0.25
    jump_prior_max_bytes: Bytes = 1 * GiB
    #: A rise of ``used`` between two stats reports smaller than this is noise, not a jump.
    jump_min_bytes: Bytes = 16 * MiB
    #: The jumps a guest has shown are remembered, fading with this half-life: a guest that once
    #: allocated 2 GiB at once keeps room for it for hours after.
    jump_half_life_s: PositiveSeconds = 4 * 3600.0
    #: The steady growth rates a guest has shown fade faster: a ramp is seen as it goes (two stats
    #: reports in a row), so its memory only bridges the next ramp of the same job.
    rate_half_life_s: PositiveSeconds = 600.0

    # --- anticipation: the guest's recurring demand (see policy/default/profile.py) --------------------
    #: Width of one time-of-day slot of a guest's demand profile: a day is ``86400 / profile_slot_s``
    #: slots (288 at 5 min), a week seven times that. A slot holds the peak demand seen in it.
    profile_slot_s: PositiveSeconds = 300.0
    #: The profile's peaks fade with this half-life, a step per day (daily record) or per week (weekly)
    #: the slot is seen again: a nightly job that stopped is still expected for a couple of weeks.
    profile_half_life_s: PositiveSeconds = 14 * 86400.0
    #: Peaks are kept in this grain (rounded up), so a guest's profile is two bytes a slot on disk.
    profile_grain_bytes: PositiveBytes = 16 * MiB
    #: A burst the profile expects within one reaction time plus this lead is grown for ahead of time:
    #: the allocation and the balloon need that long (a 2 GiB deflate at about 2 GiB/s on the rig, paced
    #: growth while other balloons shrink, the ticks in between).
    profile_lead_s: Seconds = 60.0
    #: Switch pre-growth off (the ablation): the profile is still learned and saved.
    anticipation: bool = True

    # --- demand estimation -------------------------------------------------------------------------
    #: Time constant of demand decay: demand rises at once but falls towards ``used`` with this
    #: exponential time constant, so a guest that just freed memory is not squeezed straight away.
    demand_decay_s: PositiveSeconds = 60.0
    #: While ``used`` rises steadily, the tiers hold what it adds this far ahead (and at least one
    #: reaction time), so the balloon deflates ahead of a growing guest.
    trend_lookahead_s: Seconds = 6.0
    #: Swap-in above this rate (bytes/s) means the guest is short of memory now.
    swap_in_pressure_bytes_per_s: BytesPerS = 256 * KiB
    #: Major faults above this rate mean the guest is re-reading evicted pages (working set too big).
    major_fault_pressure_per_s: Rate = 200.0
    #: A guest whose MemAvailable is below this is under pressure even before it swaps.
    low_available_bytes: Bytes = 32 * MiB
    #: Extra demand given to a guest under swap/fault pressure, as a fraction of its maximum: its ``used``
    #: under-reports a working set that no longer fits.
    pressure_boost_fraction: Fraction = 0.10
    #: A guest stays "under pressure" this long after its last pressure signal (stats come in bursts).
    pressure_hold_s: Seconds = 10.0
    #: A guest that deflated its balloon by itself (autodeflate) ran past its swap: it gets what it
    #: took plus this fraction of its max at once, since it is still short of what did not fit.
    self_deflate_boost_fraction: Fraction = 0.15

    # --- cache-aware shrinking (see policy/default/refault.py) ---------------------------------------
    #: A shrink into a guest's page cache is stepped back once its accuracy, ``1 - excess major faults /
    #: pages taken``, falls below this (ByteDance's TMO keeps its reclaim at or above 0.99).
    reclaim_accuracy_min: Fraction = 0.99
    #: ... and only with at least this many faults above the guest's own pace: a few faults after a
    #: small step are noise, not a trend.
    refault_min_faults: Count = 64
    #: The size a guest was stepped back to is kept this long, then probed again.
    refault_memory_s: PositiveSeconds = 3600.0
    #: A probe with no shrink for this long and an accuracy within the bound is accepted: the smaller
    #: size is the guest's quiet size from then on (longer than a stats period, so a report judges it).
    refault_settle_s: PositiveSeconds = 30.0
    #: Time constant of the guest's own major-fault rate, taken while it is not being shrunk.
    refault_baseline_s: PositiveSeconds = 60.0
    #: Each step into a guest's cache takes at most this share of its maximum (what is free in it goes
    #: at the normal pace): a step too far is small, and so is what a step-back gives back.
    cache_shrink_step_fraction: Fraction = 0.02
    #: MemFree up to this is the guest kernel's own: it keeps that much free by evicting cache, so a
    #: balloon taking it evicts cache too; only MemFree beyond it goes at the normal pace.
    cache_free_slack_bytes: Bytes = 64 * MiB

    # --- how targets move --------------------------------------------------------------------------
    #: Voluntary shrinking is limited to this fraction of the VM's maximum per second, so a guest is
    #: never pushed into a reclaim storm (MOM: 5 % per 10 s; we go faster but still gradually, and only
    #: ever toward a want that keeps the guest's room: the balloon inflated 480-640 MiB/s on the rig).
    shrink_rate_per_s: Fraction = 0.05
    #: ... but at least this much per tick, so small VMs converge in a reasonable time.
    shrink_min_step_bytes: Bytes = 16 * MiB
    #: No shrink smaller than ``max(shrink_dead_band_bytes, shrink_dead_band_fraction * max)``:
    #: targets do not flap with noise in ``used``.
    shrink_dead_band_bytes: Bytes = 24 * MiB
    shrink_dead_band_fraction: Fraction = 0.02
    #: Growth smaller than this is not worth an action (growth itself is never rate-limited).
    grow_min_step_bytes: Bytes = 1 * MiB
    #: After growing a VM, do not shrink it for this long (its load just changed; let it settle).
    shrink_cooldown_after_grow_s: Seconds = 20.0

    # --- the host ----------------------------------------------------------------------------------
    #: Host memory kept free for the host itself: ``max(reserve_bytes, reserve_fraction * MemTotal)``
    #: unless the config names a fixed reserve.
    reserve_bytes: Bytes = 512 * MiB
    reserve_fraction: Fraction = 0.05
    #: A fixed reserve (config ``[host] reserve``) instead of the rule above.
    host_reserve_bytes: Bytes | None = None
    #: What the host keeps free whatever happens (its hard minimum): a process killed in a guest is a
    #: worse harm than a host below its reserve, so guests may take the reserve to stay above their OOM
    #: floors, but not this last part of it, below which the host itself swaps (and its OOM killer takes
    #: whole VMs). Where the host's kernel tells its free watermarks (``/proc/zoneinfo``, a local host),
    #: it is their low watermarks (where kswapd starts reclaiming for the host) plus
    #: ``host_min_free_margin``: what the host itself (QEMU, its own programs) may allocate within one
    #: reaction time before the daemon sees it. Where they are not known (the simulator, a remote host),
    #: ``max(host_min_free, host_min_free_fraction * MemTotal)``. Never more than the reserve.
    host_min_free_margin_bytes: Bytes = 128 * MiB
    host_min_free_bytes: Bytes = 256 * MiB
    host_min_free_fraction: Fraction = 0.01
    #: A fixed budget for all ballooned VMs together (config ``[host] budget``); the host-derived budget
    #: (MemAvailable + what the VMs hold - reserve) still applies when it is smaller.
    host_budget_bytes: Bytes | None = None

    # --- safety rules ------------------------------------------------------------------------------------
    #: Guest stats older than this are stale: the guest is held, never shrunk.
    stats_stale_s: Seconds = 30.0
    #: A balloon whose ``actual`` has not moved toward its target for this long is stuck (Xen: 5 s).
    stuck_after_s: Seconds = 10.0
    #: ``|actual - target|`` within this counts as arrived; a move by at least this counts as progress.
    stuck_tolerance_bytes: Bytes = 4 * MiB
    #: ``actual`` rising by more than this above both its last value and its target, without us asking,
    #: means the guest deflated itself (autodeflate at OOM time): its target follows instead of fighting.
    self_deflate_tolerance_bytes: Bytes = 8 * MiB
    #: A target changed outside autoballoon (virsh setmem, autoballoon setmem) is left alone this long.
    manual_grace_s: Seconds = 300.0
    #: A stuck balloon's target is set back to where the balloon is, and it is left alone this long
    #: before autoballoon tries to move it again.
    stuck_retry_s: Seconds = 300.0
    #: ... and each time it is found stuck again without having followed a target in between, twice as
    #: long, up to this: a balloon that never follows (a guest without a driver that answers) is not
    #: shrunk and followed back every five minutes forever, a journal line and a metric flap each time.
    stuck_retry_max_s: Seconds = 3600.0
    #: A grow whose balloon has not moved toward it for this long is sent again: a guest that needs
    #: memory is never left waiting on a request that got lost (seen with a libvirtd busy re-probing
    #: QEMU: the call returned, the balloon did not move).
    grow_retry_s: Seconds = 5.0

    # --- controller --------------------------------------------------------------------------------
    #: Seconds between two decisions.
    interval_s: PositiveSeconds = 2.0
    #: The shortest interval accepted: stats and balloons do not move faster than this anyway.
    min_interval_s: PositiveSeconds = 0.5
    #: Back-off between reconnect attempts after a lost backend: doubles from initial up to max.
    reconnect_initial_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 30.0
    #: Journal entries kept in memory for the status API and dashboard.
    journal_ring_size: Count = 1000
    #: What survives a restart (quarantines, manual holds, learned history) is saved at once when a
    #: quarantine or a hold changes, and otherwise at most this often.
    state_save_interval_s: PositiveSeconds = 60.0
    #: The daemon's threshold for the garbage collector's youngest generation (Python's default: 700).
    #: A decision allocates a few short-lived records per VM, which reference counting frees; the
    #: collector only looks for cycles, and at 1,000 VMs the default ran it several times a tick, about a
    #: tenth of the decision (``bench/bench_policy.py``, which runs under the daemon's setting, with and
    #: without it). The older generations keep Python's thresholds.
    collector_young_threshold: Count = 10_000

    def __post_init__(self) -> None:
        check_fields(self, _ORDERED)


DEFAULT_TUNABLES = Tunables()
