"""Every physical constant of the simulated guests and host, in one frozen place.

The simulator is only useful if its numbers are believable and easy to argue with, so none of them is
buried in the engine: each default below says where its value comes from (a measurement on this project's
real-guest rig, the Linux or QEMU source, or a plain modelling choice, said as such). Sizes are bytes,
speeds bytes per second, times seconds.

The rig is ``tests/rig`` (Debian cloud kernel 6.1, 512 MiB guests under TCG, virtio balloon with stats
every second); ``docs/libvirt.md`` records what was measured on it, and the replay test
(``tests/test_replay.py``) checks the model against real recordings with these values.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoballoon.units import GiB, MiB


@dataclass(frozen=True, slots=True)
class Physics:
    """Physical constants of the guest and host model. Override with ``dataclasses.replace``."""

    #: Balloon inflation speed while the guest has free or reclaimable memory to give. The Linux driver
    #: (drivers/virtio/virtio_balloon.c) moves 256 pages (1 MiB) per virtqueue round trip; on the rig
    #: 312 MiB took under 0.5 s. 256 MiB/s is conservative.
    inflate_bps: int = 256 * MiB
    #: Inflation speed when giving memory means swapping: the driver's page allocation fails, it logs
    #: "Out of puff!" and sleeps 200 ms (virtio_balloon.c, fill_balloon), so about 5 MiB/s.
    inflate_pressure_bps: int = 5 * MiB
    #: Deflation speed: freeing balloon pages is cheap (312 MiB in about 0.15 s on the rig).
    deflate_bps: int = 2 * GiB
    #: From a new target to the balloon starting to move: libvirt's setmem, QEMU's config-change interrupt,
    #: then the driver's work item on a freezable workqueue. The stepping is whole substeps, so any value
    #: up to one step delays the move by one step (about 1 s on the rig under TCG, whose libvirt answers
    #: setmem in tens of milliseconds but whose guest runs its work item only when its vCPU is scheduled).
    balloon_latency_s: float = 1.0
    #: How old the values in a guest's report are when QEMU stamps it. QEMU stamps ``last-update`` when
    #: the report arrives (hw/virtio/virtio-balloon.c, virtio_balloon_receive_stats), but the guest fills
    #: it from a work item that runs after the request, and a policy reads it up to a period later still.
    #: One second (one stats period on the rig) is the "a period late" seen on real guests; a report is
    #: never older than its guest's period (the next request replaces it).
    stats_delay_s: float = 1.0
    #: Page cache growth into free memory while the guest does I/O (a modelling choice: a busy VM's cache
    #: fills a few GiB within an hour, as on real servers).
    cache_growth_bps: int = 2 * MiB
    #: File pages the kernel never gives up (executables, libraries being used).
    cache_min_bytes: int = 32 * MiB
    #: Memory the kernel keeps free (its min watermark): page cache never eats it, and an allocation that
    #: would dip below it reclaims, swaps or OOM-kills instead. So the OOM killer fires while MemAvailable
    #: still shows ``cache_min + free_min + available_overstatement``.
    free_min_bytes: int = 16 * MiB
    #: What MemAvailable counts as available but reclaim cannot really free: shmem and the initramfs
    #: (on the rig, the whole root file system), unreclaimable slab, mapped file pages in use. Reported in
    #: the guest's ``available`` (libvirt ``usable``) on top of what the model can free.
    available_overstatement_bytes: int = 24 * MiB
    #: Kernel and slab memory of a guest when the scenario does not say: a fixed part plus a share of max.
    kernel_base_bytes: int = 64 * MiB
    kernel_max_fraction: float = 0.02
    #: Swap size of a guest when the scenario does not say.
    swap_default_bytes: int = 1 * GiB
    #: While anonymous memory is swapped out, this share of it is paged back in each second (thrashing:
    #: the working set keeps touching it). This is the swap-in signal a policy sees.
    thrash_fraction_per_s: float = 0.02
    #: An OOM kill frees the memory that overflowed plus this share of the rest (the killed process was
    #: big), so a restarted workload has room to regrow for a while before the next kill.
    oom_kill_fraction: float = 0.5
    #: After an OOM kill the workload restarts and regrows its memory at this speed, back to its trace.
    oom_restart_bps: int = 16 * MiB
    #: Host memory QEMU itself uses per VM beyond the guest's RAM (device state, page tables, buffers).
    qemu_overhead_bytes: int = 32 * MiB
    #: Guest CPU load (share of all its vCPUs) when the scenario does not say.
    cpu_baseline: float = 0.05
    #: Load of a CPU-storm guest while its balloon is inflated (Windows WMI storms show ~100%).
    storm_load: float = 0.98
    #: A balloon counts as inflated (for the CPU storm) once it holds more than this.
    storm_min_balloon_bytes: int = 1 * MiB
    #: Guest stats polling period when the scenario does not say (libvirt's `<stats period>`).
    stats_period_default: float = 5.0
    #: Wall-clock seconds at virtual time 0. Not zero because QEMU's ``last-update`` 0 means "never".
    epoch: float = 1_700_000_000.0
    #: Guest page size: converts swapped bytes to major-fault counts.
    page_size: int = 4096
    #: Demand noise is drawn at knots this many seconds apart and interpolated (smooth, not white).
    noise_knot_s: float = 60.0
    #: Host PSI "some" reaches 100% when host memory is overrun by this much (host swapping).
    psi_full_scale_bytes: int = 1 * GiB

    @property
    def reserved_bytes(self) -> int:
        """Beyond its kernel, what a guest must keep besides anonymous memory not to swap."""
        return self.cache_min_bytes + self.free_min_bytes


DEFAULT_PHYSICS = Physics()
