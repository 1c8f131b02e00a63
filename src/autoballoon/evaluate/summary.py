"""Suite-level figures, the ranking and the acceptance bars, computed from per-run metrics (pure).

**Harm gates the ranking.** Policies are ordered by harm first — OOM kills, then host overrun, then
pressure, then CPU storm — and only then by efficiency, because an operator would rather reclaim less than
lose a guest's process; a policy that harms guests must never look better for the memory it took. The
oracle is the yardstick, not a contender: it is listed last.

The project's acceptance bars (:data:`BARS`, checked by :func:`acceptance`):

- on every scenario, the default policy causes no OOM kill and no host overrun, no more OOM kills than
  ``mom`` or ``proxmox``, and no more pressure than either;
- on every scenario longer than a day whose bursts recur (a demand step at a time of day an earlier day
  had one at: :func:`.metrics.burst_days`), the default policy causes no OOM kill but on a day with a
  *first* burst (nothing said it was coming; its kills over the run are still held to the references'
  above), and on each day whose bursts all recur no more than a tenth of the pressure of the last day
  with a first burst: the profile must have learned the rhythm;
- on every scenario, no policy's oracle efficiency exceeds 1 (the oracle is the limit; above it, the
  measurement is crediting harm);
- over the suite (reclaimed summed over scenarios, divided by the oracle's sum) the default policy's
  oracle efficiency is at least 0.85, and it ranks above both references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from autoballoon.evaluate.metrics import FIRST_BURST, RECURRING_BURST, Day, Metrics
from autoballoon.evaluate.policies import ORACLE

#: The roles the bars give to policies of :data:`autoballoon.policy.POLICIES`.
DEFAULT_POLICY = "autoballoon"
REFERENCES = ("mom", "proxmox")

MIN_SUITE_EFFICIENCY = 0.85
#: Pressure within this many VM-seconds of a reference's counts as "no more" (one sampling step).
PRESSURE_SLACK_VM_S = 1.0
#: A day whose bursts all recur may have at most this share of the last first-burst day's pressure.
RECURRING_PRESSURE_SHARE = 0.1
#: Oracle efficiency above 1 by more than this fails the bar (float rounding of the integrals only).
EFFICIENCY_CEILING = 1.0 + 1e-9

#: The bars, in words, for the report.
BARS = (
    "on every scenario the default policy causes no OOM kill and no host overrun",
    "on every scenario the default policy causes no more OOM kills and no more pressure than mom or proxmox",
    "on every scenario longer than a day with recurring bursts the default policy causes no OOM kill but "
    "on a day with a first burst (a demand step at a time of day no earlier day had one at), and on "
    f"each day whose bursts all recur at most {RECURRING_PRESSURE_SHARE:g} of the pressure of the last "
    "first-burst day",
    "on every scenario no policy's oracle efficiency exceeds 1",
    f"over the suite the default policy's oracle efficiency is at least {MIN_SUITE_EFFICIENCY:g} and it "
    "ranks above mom and proxmox (harm first, then efficiency)",
)


@dataclass(frozen=True, slots=True)
class PolicySummary:
    policy: str
    scenarios: int
    reclaimed_gib_h: float
    oracle_gib_h: float
    suite_efficiency: float | None
    pressure_vm_s: float
    oom_kills: int
    host_overrun_s: float
    cpu_storm_vm_s: float
    worst_reaction_p99_s: float | None
    cpu_per_tick_ms: float | None
    uncredited_gib_h: float = 0.0

    @property
    def oracle_efficiency(self) -> float | None:
        return self.suite_efficiency

    def to_json(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "scenarios": self.scenarios,
            "reclaimed_gib_h": round(self.reclaimed_gib_h, 4),
            "oracle_efficiency": None if self.suite_efficiency is None else round(self.suite_efficiency, 4),
            "pressure_vm_s": round(self.pressure_vm_s, 3),
            "oom_kills": self.oom_kills,
            "host_overrun_s": round(self.host_overrun_s, 3),
            "reaction_p99_s": None
            if self.worst_reaction_p99_s is None
            else round(self.worst_reaction_p99_s, 3),
            "cpu_per_tick_ms": None if self.cpu_per_tick_ms is None else round(self.cpu_per_tick_ms, 4),
        }


def summarize(metrics: Sequence[Metrics], oracle: dict[str, float]) -> list[PolicySummary]:
    """Per policy, over every scenario it ran on. ``oracle`` maps scenario → the oracle's reclaimed."""
    out: list[PolicySummary] = []
    for policy in dict.fromkeys(m.policy for m in metrics):
        rows = [m for m in metrics if m.policy == policy]
        reclaimed = sum(m.reclaimed_gib_h for m in rows)
        oracle_sum = sum(oracle.get(m.scenario, 0.0) for m in rows)
        p99 = [m.reaction_p99_s for m in rows if m.reaction_p99_s is not None]
        cpu = [m.cpu_per_tick_ms for m in rows if m.cpu_per_tick_ms is not None]
        out.append(
            PolicySummary(
                policy=policy,
                scenarios=len(rows),
                reclaimed_gib_h=reclaimed,
                oracle_gib_h=oracle_sum,
                suite_efficiency=reclaimed / oracle_sum if oracle_sum > 0 else None,
                pressure_vm_s=sum(m.pressure_vm_s for m in rows),
                oom_kills=sum(m.oom_kills for m in rows),
                host_overrun_s=sum(m.host_overrun_s for m in rows),
                cpu_storm_vm_s=sum(m.cpu_storm_vm_s for m in rows),
                worst_reaction_p99_s=max(p99) if p99 else None,
                cpu_per_tick_ms=sum(cpu) / len(cpu) if cpu else None,
                uncredited_gib_h=sum(m.uncredited_gib_h for m in rows),
            )
        )
    return out


def rank_key(m: Metrics | PolicySummary) -> tuple[bool, int, float, float, float, float]:
    """Harm first, then efficiency: OOM kills, host overrun, pressure, CPU storm, then most reclaimed.
    The oracle sorts last whatever its numbers: it is the yardstick."""
    return (
        m.policy == ORACLE,
        m.oom_kills,
        m.host_overrun_s,
        m.pressure_vm_s,
        m.cpu_storm_vm_s,
        -(m.oracle_efficiency or 0.0),
    )


Ranked = TypeVar("Ranked", Metrics, PolicySummary)


def ranked(rows: Sequence[Ranked]) -> list[Ranked]:
    """``rows`` in ranking order (see :func:`rank_key`)."""
    return sorted(rows, key=rank_key)


def outranks(a: Metrics | PolicySummary, b: Metrics | PolicySummary) -> bool:
    """Whether ``a`` ranks strictly above ``b``: less harm, or as little harm and a higher efficiency."""
    return rank_key(a) < rank_key(b)


@dataclass(frozen=True, slots=True)
class Check:
    scenario: str  # "suite" for the suite-wide checks
    what: str
    ok: bool
    detail: str


def acceptance(metrics: Sequence[Metrics], summaries: Sequence[PolicySummary]) -> list[Check]:
    """Every check of the bars that the available runs allow (a missing reference skips its comparison)."""
    checks: list[Check] = []
    by = {(m.scenario, m.policy): m for m in metrics}
    for scenario in dict.fromkeys(m.scenario for m in metrics):
        ours = by.get((scenario, DEFAULT_POLICY))
        if ours is not None:
            checks.extend(kill_checks(scenario, ours))
            checks.append(
                Check(scenario, "no host overrun", ours.host_overrun_s == 0, f"{ours.host_overrun_s:g} s")
            )
            for ref in REFERENCES:
                theirs = by.get((scenario, ref))
                if theirs is None:
                    continue
                checks.append(
                    Check(
                        scenario,
                        f"OOM kills <= {ref}",
                        ours.oom_kills <= theirs.oom_kills,
                        f"{ours.oom_kills} vs {theirs.oom_kills}",
                    )
                )
                # Harm is ordered: a reference that killed more, or overran the host longer, ranks
                # below on a graver harm, and its pressure (a killed workload no longer needs memory)
                # is no bar to meet.
                graver = (theirs.oom_kills, theirs.host_overrun_s) > (ours.oom_kills, ours.host_overrun_s)
                detail = f"{ours.pressure_vm_s:g} vs {theirs.pressure_vm_s:g} VM-s"
                if graver:
                    detail += f" ({ref}: {theirs.oom_kills} OOM kills, {theirs.host_overrun_s:g} s overrun)"
                checks.append(
                    Check(
                        scenario,
                        f"pressure <= {ref}",
                        graver or ours.pressure_vm_s <= theirs.pressure_vm_s + PRESSURE_SLACK_VM_S,
                        detail,
                    )
                )
        for m in metrics:
            if m.scenario == scenario and m.oracle_efficiency is not None:
                checks.append(
                    Check(
                        scenario,
                        f"{m.policy} oracle efficiency <= 1",
                        m.oracle_efficiency <= EFFICIENCY_CEILING,
                        f"{m.oracle_efficiency:.3f}",
                    )
                )
    suite = {s.policy: s for s in summaries}
    ours_s = suite.get(DEFAULT_POLICY)
    if ours_s is not None and ours_s.suite_efficiency is not None:
        eff = ours_s.suite_efficiency
        checks.append(
            Check(
                "suite",
                f"oracle efficiency >= {MIN_SUITE_EFFICIENCY:g}",
                eff >= MIN_SUITE_EFFICIENCY,
                f"{eff:.3f}",
            )
        )
        for ref in REFERENCES:
            theirs_s = suite.get(ref)
            if theirs_s is None:
                continue
            checks.append(
                Check(
                    "suite",
                    f"ranks above {ref}",
                    outranks(ours_s, theirs_s),
                    f"{_brief(ours_s)} vs {_brief(theirs_s)}",
                )
            )
    return checks


def kill_checks(scenario: str, ours: Metrics) -> list[Check]:
    """No OOM kills; on a scenario of recurring bursts, none but on first-burst days, and each day whose
    bursts recur with a tenth of the last first-burst day's pressure at most."""
    if not any(d.bursts == RECURRING_BURST for d in ours.days):
        return [Check(scenario, "no OOM kills", ours.oom_kills == 0, f"{ours.oom_kills} kills")]
    later = [d for d in ours.days if d.bursts != FIRST_BURST]
    killed = [f"day {d.day}: {d.oom_kills}" for d in later if d.oom_kills]
    excused = sum(d.oom_kills for d in ours.days if d.bursts == FIRST_BURST)
    detail = (", ".join(killed) or "none") + f" ({excused} on first-burst days)"
    checks = [Check(scenario, "no OOM kills but on first-burst days", not killed, detail)]
    first: Day | None = None
    for d in ours.days:
        if d.bursts == FIRST_BURST:
            first = d
        elif d.bursts == RECURRING_BURST and first is not None:
            bar = first.pressure_vm_s * RECURRING_PRESSURE_SHARE
            checks.append(
                Check(
                    scenario,
                    f"day {d.day} (recurring): pressure <= {RECURRING_PRESSURE_SHARE:g} x day {first.day}'s",
                    d.pressure_vm_s <= bar + PRESSURE_SLACK_VM_S,
                    f"{d.pressure_vm_s:g} vs {first.pressure_vm_s:g} VM-s",
                )
            )
    return checks


def _brief(s: PolicySummary) -> str:
    eff = "-" if s.suite_efficiency is None else f"{s.suite_efficiency:.3f}"
    return (
        f"{s.oom_kills} kills, {s.host_overrun_s:g} s overrun, {s.pressure_vm_s:g} VM-s pressure, eff. {eff}"
    )
