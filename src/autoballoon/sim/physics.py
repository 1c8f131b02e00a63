"""Every physical constant of the simulated guests and host, in one frozen place.

The simulator is only useful if its numbers are believable and easy to argue with, so none of them is
buried in the engine: each default below says where its value comes from (a measurement on this project's
real-guest rig, the Linux or QEMU source, or a plain modelling choice, said as such). Sizes are bytes,
speeds bytes per second, times seconds.

The rig is ``tests/rig`` (Debian cloud kernel 6.1, 512 MiB guests under TCG, virtio balloon with stats
every second); ``docs/libvirt.md`` records what was measured on it, and the replay test
(``tests/test_replay.py``) checks the model against the real recordings in ``tests/replay/`` with these
values (``python -m tests.replay.record`` makes them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autoballoon.units import GiB, KiB, MiB


@dataclass(frozen=True, slots=True)
class Physics:
    """Physical constants of the guest and host model. Override with ``dataclasses.replace``."""

    #: Balloon inflation speed while the guest has free or reclaimable memory to give. The Linux driver
    #: (drivers/virtio/virtio_balloon.c) moves 256 pages (1 MiB) per virtqueue round trip; on the rig
    #: 512 -> 200 MiB took 1.6-5 s, 50-155 MiB/s (``tests/replay/squeeze.json``).
    inflate_bps: int = 100 * MiB
    #: Inflation speed when giving memory means swapping: the driver's page allocation fails, it logs
    #: "Out of puff!" and sleeps 200 ms (virtio_balloon.c, fill_balloon), so about 5 MiB/s.
    inflate_pressure_bps: int = 5 * MiB
    #: Deflation speed: 236-310 MiB moved within one half-second sample on the rig (at least 470 MiB/s).
    deflate_bps: int = 512 * MiB
    #: From a new target to the balloon starting to move: libvirt's setmem, QEMU's config-change interrupt,
    #: then the driver's work item on a freezable workqueue. 0.1-1.2 s on the rig (the longest while the
    #: guest was busy allocating). Movement is stepped in whole substeps, so it is rounded up to a step.
    balloon_latency_s: float = 0.5
    #: How old the values in a guest's report are when QEMU stamps it (hw/virtio/virtio-balloon.c stamps
    #: ``last-update`` when the report arrives, after the guest's work item filled it). On the rig, libvirt's
    #: ``usable`` trailed the guest's own MemAvailable by 0.3-1.0 s with a 1 s period: the report's age
    #: (up to one period, which the model has anyway) plus at most about 0.25 s. Never more than a period.
    stats_delay_s: float = 0.25
    #: Page cache growth into free memory while the guest does I/O (a modelling choice: a busy VM's cache
    #: fills a few GiB within an hour, as on real servers).
    cache_growth_bps: int = 2 * MiB
    #: File pages the kernel never gives up (executables and libraries in use). MemAvailable counts them,
    #: so it overstates what reclaim can free by this much plus the min watermark, and the OOM killer fires
    #: while MemAvailable still shows both. A modelling choice for a server; the rig's guests run from an
    #: initramfs (shmem, which MemAvailable does not count) and have none, which their replay uses.
    cache_min_bytes: int = 32 * MiB
    #: The kernel's min watermark (mm/page_alloc.c, init_per_zone_wmark_min): min_free_kbytes is
    #: sqrt(16 x RAM in KiB), between 128 KiB and 256 MiB: 2.9 MiB for 512 MiB, 8 MiB for 4 GiB. Page cache
    #: never eats it, and an allocation that would dip below it reclaims, swaps or OOM-kills. The balloon
    #: *can* take it (its allocations only skip the emergency reserves), which is how inflating a guest
    #: without swap onto memory in use OOM-kills: on the rig the balloon drove MemAvailable to 3 MiB
    #: and the OOM killer fired.
    min_free_scale: int = 16
    min_free_floor_bytes: int = 128 * KiB
    min_free_ceiling_bytes: int = 256 * MiB
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

    def min_free(self, max_bytes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Each guest's min watermark, from its memory size (see ``min_free_scale``)."""
        kib = np.sqrt(self.min_free_scale * (max_bytes // KiB).astype(np.float64))
        return np.clip(
            np.rint(kib).astype(np.int64) * KiB, self.min_free_floor_bytes, self.min_free_ceiling_bytes
        )


DEFAULT_PHYSICS = Physics()
