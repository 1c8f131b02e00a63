"""Every physical constant of the simulated guests and host, in one frozen place.

The simulator is only useful if its numbers are believable and easy to argue with, so none of them is
buried in the engine: each default below says where it comes from (the reference notes, measured QEMU/Linux
behaviour, or a plain modelling choice). Sizes are bytes, speeds bytes per second, times seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoballoon.units import GiB, MiB


@dataclass(frozen=True, slots=True)
class Tunables:
    """Physical constants of the guest and host model. Override with ``dataclasses.replace``."""

    #: Balloon inflation speed while the guest has free or reclaimable memory to give. The Linux driver
    #: moves 1 MiB per round trip; 312 MiB took < 0.5 s on TCG (reference 5.1). 256 MiB/s is conservative.
    inflate_bps: int = 256 * MiB
    #: Inflation speed when giving memory means swapping: the driver fails to allocate, logs "Out of puff!"
    #: and sleeps 200 ms per 1 MiB (reference 5.1), so about 5 MiB/s.
    inflate_pressure_bps: int = 5 * MiB
    #: Deflation speed: freeing balloon pages is cheap (312 MiB in about 0.15 s on TCG).
    deflate_bps: int = 2 * GiB
    #: Page cache growth into free memory while the guest does I/O (a modelling choice: a busy VM's cache
    #: fills a few GiB within an hour, as on real servers).
    cache_growth_bps: int = 2 * MiB
    #: File pages the kernel never gives up (executables, libraries being used).
    cache_min_bytes: int = 32 * MiB
    #: Memory the kernel keeps free (its watermarks): page cache never eats it.
    free_min_bytes: int = 16 * MiB
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


DEFAULT_TUNABLES = Tunables()
