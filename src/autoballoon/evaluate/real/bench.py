"""``autoballoon evaluate --real``: every real scenario against every policy, traces, report.

Scenarios run one after another, each inside its own rig session (which starts libvirtd/virtlogd if
nothing runs them and stops them again at its end) and, with ``lease``, while holding an exclusive
``flock`` on that file, so that several users of one host take turns between workloads instead of booting
guests over each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoballoon.evaluate.real.metrics import RunMetrics, ranked, run_metrics
from autoballoon.evaluate.real.scenario import RealScenario, load_real_scenario
from autoballoon.evaluate.real.trace import RunTrace, trace_filename, write_trace
from autoballoon.rig.errors import RigError


@dataclass(frozen=True, slots=True)
class RealResults:
    runs: tuple[RunTrace, ...]
    metrics: tuple[RunMetrics, ...]
    wall_s: float  # with the lease held (waits for other users of the host left out)


@contextlib.contextmanager
def lease(path: Path | None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed) for the block; nothing without a path."""
    if path is None:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_real(
    scenarios: Sequence[RealScenario],
    policies: Sequence[str],
    *,
    work: Path,
    record: Path | None = None,
    lease_path: Path | None = None,
    progress: Callable[[str], None] = print,
) -> RealResults:
    """Run the matrix; each run's trace goes to ``record`` (if given) as soon as its scenario ends."""
    from autoballoon.evaluate.real.harness import run_scenario  # needs libvirt-python
    from autoballoon.rig.session import open_session

    busy_s = 0.0  # time with the lease held: waiting for another user of the host is not ours
    runs: list[RunTrace] = []
    for scenario in scenarios:
        with lease(lease_path):
            started = time.monotonic()
            session = open_session()
            try:
                traces = run_scenario(scenario, policies, session, work / scenario.name, progress)
            finally:
                left = session.close()
            if left:
                raise RigError(f"daemons the rig started are still running: {', '.join(left)}")
            busy_s += time.monotonic() - started
        for trace in traces:
            if record is not None:
                write_trace(trace, record / trace_filename(trace.scenario, trace.policy))
            m = run_metrics(trace)
            progress(
                f"{scenario.name}/{trace.policy}: {m.oom_kills} OOM kills, {m.above_budget_s:.0f} s above "
                f"budget, {m.pressure_s:.0f} s pressure, {m.reclaimed_balloon >> 20} MiB reclaimed"
            )
        runs.extend(traces)
    metrics = tuple(
        m for s in scenarios for m in ranked([run_metrics(r) for r in runs if r.scenario == s.name])
    )
    return RealResults(tuple(runs), metrics, busy_s)


def load_scenarios(paths: Sequence[Path]) -> list[RealScenario]:
    """Every scenario, validated before any guest boots."""
    return [load_real_scenario(p) for p in paths]
