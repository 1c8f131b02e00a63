"""Every number the default policy, the guards and the controller use, in one frozen value.

Keeping them here (and nowhere else) means an operator can override any of them from the config file's
``[tunables]`` table, the evaluation harness can sweep them, and a reader sees in one place what the
daemon's behaviour depends on. Sizes are integer bytes (fields end in ``_bytes``), times are float
seconds (``_s``), fractions are floats (0.2 = 20 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from autoballoon.units import MiB


@dataclass(frozen=True, slots=True)
class Tunables:
    """The knobs of the default balloon policy. The defaults favour "no harm" over the last MiB reclaimed."""

    # --- what a guest should get -------------------------------------------------------------------
    #: Fraction kept above the estimated demand (Hyper-V's default memory buffer is 20 %).
    buffer: float = 0.20
    #: Absolute headroom added on top of ``demand * (1 + buffer)``: small guests need it most, since a
    #: percentage of a small demand is a few MiB and one burst of page-cache or a fork eats it.
    min_headroom_bytes: int = 64 * MiB
    #: The lowest target ever set, whatever a VM's own ``min`` says: below this Linux guests thrash.
    global_min_bytes: int = 128 * MiB
    #: Targets are rounded up to this (libvirt speaks KiB; a MiB grain keeps the journal readable).
    target_align_bytes: int = 1 * MiB
    #: Weight of a VM in the water-fill when it has none of its own (Proxmox's default is 1000).
    default_shares: int = 1000

    # --- demand estimation -------------------------------------------------------------------------
    #: Time constant of demand decay: demand rises at once but falls towards ``used`` with this
    #: exponential time constant, so a guest that just freed memory is not squeezed straight away.
    demand_decay_s: float = 60.0
    #: When ``used`` is rising, demand is projected this far ahead at the observed rate, so that the
    #: balloon deflates ahead of a steadily growing guest instead of one tick behind it.
    trend_lookahead_s: float = 6.0
    #: Swap-in above this rate (bytes/s) means the guest is short of memory now.
    swap_in_pressure_bytes_per_s: int = 256 * 1024
    #: Major faults above this rate mean the guest is re-reading evicted pages (working set too big).
    major_fault_pressure_per_s: float = 200.0
    #: A guest whose MemAvailable is below this is under pressure even before it swaps.
    low_available_bytes: int = 32 * MiB
    #: Extra demand given to a guest under swap/fault pressure, as a fraction of its maximum: its ``used``
    #: under-reports a working set that no longer fits.
    pressure_boost_fraction: float = 0.10
    #: A guest stays "under pressure" this long after its last pressure signal (stats come in bursts).
    pressure_hold_s: float = 10.0
    #: A guest that deflated its balloon by itself (autodeflate) ran past its swap: it gets what it
    #: took plus this fraction of its max at once, since it is still swapping what did not fit.
    self_deflate_boost_fraction: float = 0.15
    #: How roomy the host is scales every cushion: ``rho`` is the share of the memory between all
    #: guests' needs and all their maxima that the host could give (1 when it could hold every guest at
    #: its max). From ``rho = 1`` down to ``roomy_from`` the default buffer falls from ``buffer`` to
    #: ``buffer_short`` and the spare fades out. An over-committed host keeps guests at demand plus a
    #: thin margin, since any cushion there is memory another guest may need (measured: the evaluation's
    #: fleet-day, overcommit and stuck-balloon hosts sit at rho 0.1-0.55; with 20 % buffers there, the
    #: wants outgrew the budget and pushed guests below demand); a roomy host loses nothing it lacks.
    roomy_from: float = 0.5
    buffer_short: float = 0.05
    #: On a roomy host each guest also keeps a spare of this fraction of its demand: it absorbs a first
    #: burst or job start that no stats have shown yet (the evaluation's spikes triple a cache's
    #: demand at once). A short host takes the spares back first.
    roomy_buffer: float = 1.7
    roomy_gap: float = 0.5

    # --- how targets move --------------------------------------------------------------------------
    #: Voluntary shrinking is limited to this fraction of the VM's maximum per second, so a guest is
    #: never pushed into a reclaim storm (MOM: 5 % per 10 s; we go faster but still gradually).
    shrink_rate_per_s: float = 0.025
    #: ... but at least this much per tick, so small VMs converge in a reasonable time.
    shrink_min_step_bytes: int = 16 * MiB
    #: No shrink smaller than ``max(shrink_dead_band_bytes, shrink_dead_band_fraction * max)``:
    #: targets do not flap with noise in ``used``.
    shrink_dead_band_bytes: int = 24 * MiB
    shrink_dead_band_fraction: float = 0.02
    #: Growth smaller than this is not worth an action (growth itself is never rate-limited).
    grow_min_step_bytes: int = 1 * MiB
    #: After growing a VM, do not shrink it for this long (its load just changed; let it settle).
    shrink_cooldown_after_grow_s: float = 20.0

    # --- the host ----------------------------------------------------------------------------------
    #: Host memory kept free for the host itself: ``max(reserve_bytes, reserve_fraction * MemTotal)``
    #: unless the config names a fixed reserve.
    reserve_bytes: int = 512 * MiB
    reserve_fraction: float = 0.05
    #: A fixed reserve (config ``[host] reserve``) instead of the rule above.
    host_reserve_bytes: int | None = None
    #: A fixed budget for all ballooned VMs together (config ``[host] budget``); the host-derived budget
    #: (MemAvailable + what the VMs hold - reserve) still applies when it is smaller.
    host_budget_bytes: int | None = None

    # --- guards ------------------------------------------------------------------------------------
    #: Guest stats older than this are stale: the guest is held, never shrunk.
    stats_stale_s: float = 30.0
    #: A balloon whose ``actual`` has not moved toward its target for this long is stuck (Xen: 5 s).
    stuck_after_s: float = 10.0
    #: ``|actual - target|`` within this counts as arrived; a move by at least this counts as progress.
    stuck_tolerance_bytes: int = 4 * MiB
    #: ``actual`` rising by more than this above both its last value and its target, without us asking,
    #: means the guest deflated itself (autodeflate at OOM time): its target follows instead of fighting.
    self_deflate_tolerance_bytes: int = 8 * MiB
    #: A target changed outside autoballoon (virsh setmem, autoballoon setmem) is left alone this long.
    manual_grace_s: float = 300.0
    #: A stuck balloon's target is set back to where the balloon is, and it is left alone this long
    #: before autoballoon tries to move it again.
    stuck_retry_s: float = 300.0

    # --- controller --------------------------------------------------------------------------------
    #: Seconds between two decisions.
    interval_s: float = 2.0
    #: The shortest interval accepted: stats and balloons do not move faster than this anyway.
    min_interval_s: float = 0.5
    #: Back-off between reconnect attempts after a lost backend: doubles from initial up to max.
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 30.0
    #: Journal entries kept in memory for the status API and dashboard.
    journal_ring_size: int = 1000
    #: Tick durations kept for the status statistics.
    tick_history: int = 300


DEFAULT_TUNABLES = Tunables()
