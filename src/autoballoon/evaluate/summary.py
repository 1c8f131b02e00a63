"""Suite-level figures and the acceptance check, computed from per-run metrics (pure).

The issue's bar: on every scenario the default policy has no OOM kills, no host-overrun seconds and no
more pressure than ``mom`` or ``proxmox``; over the suite (reclaimed summed over scenarios, divided by the
oracle's sum) its oracle efficiency is at least 0.85 and above both references'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autoballoon.evaluate.metrics import Metrics

DEFAULT_POLICY = "autoballoon"
REFERENCES = ("mom", "proxmox")


@dataclass(frozen=True, slots=True)
class AcceptanceTunables:
    min_suite_efficiency: float = 0.85
    #: Pressure within this many VM-seconds of a reference's counts as "no more" (one sampling step).
    pressure_slack_vm_s: float = 1.0


DEFAULT_ACCEPTANCE = AcceptanceTunables()


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
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Check:
    scenario: str  # "suite" for the suite-wide checks
    what: str
    ok: bool
    detail: str


def acceptance(
    metrics: Sequence[Metrics],
    summaries: Sequence[PolicySummary],
    tun: AcceptanceTunables = DEFAULT_ACCEPTANCE,
) -> list[Check]:
    """Every check of the bar that the available runs allow (a missing reference skips its comparison)."""
    checks: list[Check] = []
    by = {(m.scenario, m.policy): m for m in metrics}
    for scenario in dict.fromkeys(m.scenario for m in metrics):
        ours = by.get((scenario, DEFAULT_POLICY))
        if ours is None:
            continue
        checks.append(Check(scenario, "no OOM kills", ours.oom_kills == 0, f"{ours.oom_kills} kills"))
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
                    f"pressure <= {ref}",
                    ours.pressure_vm_s <= theirs.pressure_vm_s + tun.pressure_slack_vm_s,
                    f"{ours.pressure_vm_s:g} vs {theirs.pressure_vm_s:g} VM-s",
                )
            )
    suite = {s.policy: s for s in summaries}
    ours_s = suite.get(DEFAULT_POLICY)
    if ours_s is not None and ours_s.suite_efficiency is not None:
        eff = ours_s.suite_efficiency
        checks.append(
            Check(
                "suite",
                f"oracle efficiency >= {tun.min_suite_efficiency:g}",
                eff >= tun.min_suite_efficiency,
                f"{eff:.3f}",
            )
        )
        for ref in REFERENCES:
            theirs_s = suite.get(ref)
            if theirs_s is None or theirs_s.suite_efficiency is None:
                continue
            checks.append(
                Check(
                    "suite",
                    f"oracle efficiency > {ref}",
                    eff > theirs_s.suite_efficiency,
                    f"{eff:.3f} vs {theirs_s.suite_efficiency:.3f}",
                )
            )
    return checks
