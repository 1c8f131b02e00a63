"""The evaluation report: ``evaluation.md`` with the tables, and PNG plots in ``evaluation/`` beside it.

Plots use matplotlib's Agg backend (no display). Per scenario, one panel per drawn guest shows its demand,
its maximum and every policy's allocation over time, and a last panel the memory reclaimed host-wide;
one summary chart puts each policy's suite efficiency against its harm. Scenario descriptions are the
comment block at the top of each scenario file, so the report explains each scenario in its author's words.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from autoballoon.errors import MissingDependencyError
from autoballoon.evaluate.metrics import SEVERE_HARM, Day, Metrics, harm
from autoballoon.evaluate.policies import ORACLE
from autoballoon.evaluate.runner import RunResult
from autoballoon.evaluate.summary import (
    BARS,
    DEFAULT_POLICY,
    REFERENCES,
    Check,
    PolicySummary,
    rank_key,
    ranked,
)
from autoballoon.units import GiB

SECONDS_PER_HOUR = 3600.0
T = TypeVar("T", Metrics, PolicySummary)


DPI = 90
PANEL_WIDTH_IN = 11.0
PANEL_HEIGHT_IN = 2.2
#: Line colours by policy (matplotlib's tab10), so a policy looks the same in every plot.
COLORS = {
    "autoballoon": "tab:blue",
    "mom": "tab:orange",
    "proxmox": "tab:green",
    "static": "tab:gray",
    "oracle": "tab:purple",
}
#: What marks a run with OOM kills or host overrun, in tables and in plot labels.
SEVERE_MARK = "⚠"

_HEADER = (
    "| rank | policy | harm | OOM kills | host overrun s | pressure VM-s | CPU storm VM-s "
    "| reclaimed GiB-h | oracle eff. | not credited GiB-h | reaction p50 s | reaction p99 s | CPU ms/tick |\n"
    "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
)


#: Markdown joins these lines into one paragraph.
_METRICS_TEXT = """Metrics: **reclaimed** is the integral over time of `sum(max) - sum(charged)` in GiB-hours,
where each guest is charged `max(allocated, min(max, intended demand + headroom))`: at least what its
workload needed. The *intended* demand is the scenario's trace before any OOM kill, and the headroom is the
guest's kernel, the page cache it never drops and its free watermark (below that it swaps). So memory that a
guest gave up by swapping, or that an OOM kill freed, is **not** reclaimed: a policy cannot score by harming
guests, and no policy can beat the oracle (which allocates exactly that need). **not credited** is the
memory that rule withheld (what the plain `sum(max) - sum(allocated)` would have counted on top).
**Oracle efficiency** is reclaimed divided by the oracle's on the same scenario (over the suite: sums
divided by the oracle's sum). **Pressure** is VM-seconds with demand above what the guest has room for
(it swaps); **OOM kills** happen inside guests; **host overrun** is seconds with the host's available
memory below its reserve; **CPU storm** is VM-seconds a guest spins at 90 % or more of its vCPUs (the
balloon CPU storm; not in `--json`); **reaction** is the time from a demand step (a rise of at least
max(128 MiB, 5 % of max) within 10 s) to the first moment the guest's allocation covers demand again;
**CPU** is the policy's process time per decision. The oracle knows every guest's future demand and
allocates it plus the headroom (it leaves a guest that storms its CPU when ballooned at its maximum, and
it ignores the host's size, so on a host that cannot hold every guest's demand it overruns the host).

**Ranking: harm first.** Every table is ordered by OOM kills, then host overrun, then pressure, then CPU
storm, and only then by oracle efficiency; the oracle, the yardstick, comes last. A run with OOM kills or
host overrun is marked ⚠ in every table and plot.
"""


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _policy_label(m: Metrics | PolicySummary) -> str:
    return f"{SEVERE_MARK} {m.policy}" if set(harm(m)) & set(SEVERE_HARM) else m.policy


def _harm_text(m: Metrics | PolicySummary) -> str:
    return ", ".join(harm(m)) or "none"


def metrics_table(rows: Sequence[Metrics]) -> str:
    lines = [
        f"| {rank} | {_policy_label(m)} | {_harm_text(m)} | {m.oom_kills} | {m.host_overrun_s:.0f} "
        f"| {m.pressure_vm_s:.0f} | {m.cpu_storm_vm_s:.0f} | {m.reclaimed_gib_h:.2f} "
        f"| {_f(m.oracle_efficiency, '.3f')} | {m.uncredited_gib_h:.2f} | {_f(m.reaction_p50_s, '.0f')} "
        f"| {_f(m.reaction_p99_s, '.0f')} | {_f(m.cpu_per_tick_ms, '.3f')} |"
        for rank, m in _numbered(ranked(rows))
    ]
    return _HEADER + "\n".join(lines) + "\n"


def _numbered(rows: Sequence[T]) -> list[tuple[str, T]]:
    """Rank numbers for the contenders; the oracle is the yardstick and gets none."""
    return [("–" if r.policy == ORACLE else str(i + 1), r) for i, r in enumerate(rows)]


def days_table(rows: Sequence[Metrics]) -> str:
    """A run longer than a day, one row per day: each policy's OOM kills, pressure and reclaim that day
    (the days sum to the run's totals), so that a second night better than the first shows. Empty when
    no run has days."""
    runs = [m for m in rows if m.days]
    if not runs:
        return ""
    policies = " | ".join(m.policy for m in runs)
    lines = [
        "Per day (from the run's start): OOM kills · pressure VM-s · reclaimed GiB-h. *bursts*: `first` "
        "when a guest's demand steps at a time of day it had not on an earlier day, `recurring` when "
        "every step recurs.\n",
        f"| day | bursts | {policies} |",
        "|--:|---|" + "--:|" * len(runs),
    ]
    for i, day in enumerate(runs[0].days):
        cells = " | ".join(_day_cell(m.days[i]) for m in runs)
        lines.append(f"| {day.day} | {day.bursts} | {cells} |")
    return "\n".join(lines) + "\n"


def _day_cell(d: Day) -> str:
    cell = f"{d.oom_kills} · {d.pressure_vm_s:.0f} · {d.reclaimed_gib_h:.1f}"
    return f"{SEVERE_MARK} {cell}" if d.oom_kills or d.host_overrun_s else cell


def summary_table(rows: Sequence[PolicySummary]) -> str:
    header = (
        "| rank | policy | harm | OOM kills | host overrun s | pressure VM-s | CPU storm VM-s "
        "| reclaimed GiB-h (sum) | suite oracle eff. | not credited GiB-h | worst reaction p99 s "
        "| CPU ms/tick (mean) |\n"
        "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = [
        f"| {rank} | {_policy_label(s)} | {_harm_text(s)} | {s.oom_kills} | {s.host_overrun_s:.0f} "
        f"| {s.pressure_vm_s:.0f} | {s.cpu_storm_vm_s:.0f} | {s.reclaimed_gib_h:.1f} "
        f"| {_f(s.suite_efficiency, '.3f')} | {s.uncredited_gib_h:.1f} | {_f(s.worst_reaction_p99_s, '.0f')} "
        f"| {_f(s.cpu_per_tick_ms, '.3f')} |"
        for rank, s in _numbered(ranked(rows))
    ]
    return header + "\n".join(lines) + "\n"


def scenario_description(path: str) -> str:
    """The leading ``#`` comment block of a scenario file, as one paragraph."""
    lines: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.lstrip().splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith("Format:") or body.startswith("Used by"):
            continue
        lines.append(body)
    return " ".join(x for x in lines if x)


def reference_notes(rows: Sequence[Metrics]) -> list[str]:
    """Where a reference policy reclaimed more than the default policy, say so and at what cost."""
    by = {m.policy: m for m in rows}
    ours = by.get(DEFAULT_POLICY)
    if ours is None:
        return []
    notes = []
    for ref in REFERENCES:
        theirs = by.get(ref)
        if theirs is None:
            continue
        if theirs.reclaimed_gib_h > ours.reclaimed_gib_h:
            cost = []
            if theirs.pressure_vm_s > ours.pressure_vm_s:
                cost.append(f"{theirs.pressure_vm_s:.0f} VM-s of pressure against {ours.pressure_vm_s:.0f}")
            if theirs.oom_kills > ours.oom_kills:
                cost.append(f"{theirs.oom_kills} OOM kills")
            if theirs.host_overrun_s > ours.host_overrun_s:
                cost.append(f"{theirs.host_overrun_s:.0f} s of host overrun")
            why = "at the cost of " + ", ".join(cost) if cost else "with no more harm"
            notes.append(
                f"`{ref}` reclaimed more here ({theirs.reclaimed_gib_h:.1f} against "
                f"{ours.reclaimed_gib_h:.1f} GiB-h), {why}."
            )
        elif ours.pressure_vm_s > theirs.pressure_vm_s:
            notes.append(
                f"`{ref}` caused less pressure here ({theirs.pressure_vm_s:.0f} against "
                f"{ours.pressure_vm_s:.0f} VM-s) by reclaiming less ({theirs.reclaimed_gib_h:.1f} against "
                f"{ours.reclaimed_gib_h:.1f} GiB-h)."
            )
    return notes


def _pyplot() -> ModuleType:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is in the eval and test extras
        raise MissingDependencyError(
            f"--report needs matplotlib: pip install 'autoballoon[eval]' ({e})"
        ) from e
    return plt


def _run_label(m: Metrics) -> str:
    """A plot legend entry: the policy, and its severe harm spelled out (a ⚠ run cannot hide in a plot)."""
    severe = [
        f"{m.oom_kills} OOM kills" if m.oom_kills else "",
        f"{m.host_overrun_s:.0f} s overrun" if m.host_overrun_s else "",
    ]
    notes = ", ".join(x for x in severe if x)
    return f"{SEVERE_MARK} {m.policy}: {notes}" if notes else m.policy


def plot_scenario(runs: Sequence[RunResult], out: Path) -> None:
    """Demand, max and each policy's allocation for the drawn guests, and host-wide reclaimed memory.
    Policies are drawn and listed in ranking order; a run with OOM kills or overrun says so in the legend."""
    plt = _pyplot()
    runs = sorted(runs, key=lambda r: rank_key(r.metrics))
    first = runs[0].trace
    n_panels = len(first.guests) + 1
    fig, axes = plt.subplots(
        n_panels, 1, figsize=(PANEL_WIDTH_IN, PANEL_HEIGHT_IN * n_panels), sharex=True, squeeze=False
    )
    hours = first.times / SECONDS_PER_HOUR
    for gi, guest in enumerate(first.guests):
        ax = axes[gi][0]
        ax.plot(hours, first.demand[:, gi] / GiB, color="black", lw=1.6, label="intended demand")
        ax.axhline(first.max[gi] / GiB, color="black", ls="--", lw=0.8, label="max")
        for r in runs:
            ax.plot(
                r.trace.times / SECONDS_PER_HOUR,
                r.trace.allocation[:, gi] / GiB,
                color=COLORS.get(r.metrics.policy),
                lw=1.0,
                ls=":" if set(harm(r.metrics)) & set(SEVERE_HARM) else "-",
                label=_run_label(r.metrics),
            )
        ax.set_ylabel("GiB")
        ax.set_title(guest, loc="left", fontsize=9)
        ax.set_ylim(bottom=0)
    ax = axes[-1][0]
    for r in runs:
        ax.plot(
            r.trace.times / SECONDS_PER_HOUR,
            r.trace.reclaimed / GiB,
            color=COLORS.get(r.metrics.policy),
            lw=1.0,
            label=r.metrics.policy,
        )
    ax.set_title(
        "reclaimed host-wide, charged as in the metrics (harm is not credited)", loc="left", fontsize=9
    )
    ax.set_ylabel("GiB")
    ax.set_xlabel("hours")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=min(len(labels), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def plot_summary(summaries: Sequence[PolicySummary], metrics: Sequence[Metrics], out: Path) -> None:
    """Left: the ranking (harm first, then efficiency) as bars of suite efficiency, each labelled with its
    harm. Right: efficiency per scenario and policy, hatched where that run had OOM kills or overrun."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(PANEL_WIDTH_IN, 4.6))
    order = ranked(list(summaries))
    ys = list(range(len(order)))[::-1]  # the best at the top
    for y, s in zip(ys, order, strict=True):
        severe = bool(set(harm(s)) & set(SEVERE_HARM))
        left.barh(
            [y],
            [s.suite_efficiency or 0.0],
            color=COLORS.get(s.policy),
            hatch="xx" if severe else None,
            edgecolor="red" if severe else "none",
        )
        pressure_h = s.pressure_vm_s / SECONDS_PER_HOUR
        note = f"{s.oom_kills} OOM kills · {s.host_overrun_s:.0f} s overrun · {pressure_h:.1f} VM-h pressure"
        left.annotate(note, (0.01, y), xytext=(0, -11), textcoords="offset points", fontsize=7)
    left.set_yticks(ys)
    left.set_yticklabels([_policy_label(s) for s in order], fontsize=8)
    left.set_xlim(0, 1.05)
    left.set_xlabel("oracle efficiency over the suite")
    left.set_title("ranking: harm first, then efficiency (⚠ = OOM kills or host overrun)", fontsize=9)
    left.grid(axis="x", alpha=0.3)
    scenarios = list(dict.fromkeys(m.scenario for m in metrics))
    policies = [s.policy for s in order]
    width = 0.8 / max(1, len(policies))
    by = {(m.scenario, m.policy): m for m in metrics}
    for pi, policy in enumerate(policies):
        for i, sc in enumerate(scenarios):
            m = by.get((sc, policy))
            if m is None:
                continue
            severe = bool(set(harm(m)) & set(SEVERE_HARM))
            right.bar(
                [i + pi * width],
                [m.oracle_efficiency or 0.0],
                width=width,
                color=COLORS.get(policy),
                hatch="xx" if severe else None,
                edgecolor="red" if severe else "none",
                label=policy if i == 0 else None,
            )
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(scenarios))])
    right.set_xticklabels(scenarios, rotation=45, ha="right", fontsize=8)
    right.set_ylabel("oracle efficiency")
    right.set_ylim(0, 1.05)
    right.set_title("per scenario (hatched red: the run had OOM kills or host overrun)", fontsize=9)
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def render_markdown(
    results: Sequence[RunResult],
    summaries: Sequence[PolicySummary],
    checks: Sequence[Check],
    *,
    wall_s: float,
    command: str,
    plot_dir: str,
    sources: dict[str, str],
) -> str:
    """The whole ``evaluation.md`` text (plots referenced relative to it)."""
    metrics = [r.metrics for r in results]
    out: list[str] = [
        "# Evaluation: the default policy against MOM, Proxmox, static and the oracle\n",
        f"Generated by `{command}` ({len(results)} runs on "
        f"{len(sources)} scenarios in {wall_s:.0f} s wall on {platform.machine()} with Python "
        f"{platform.python_version()}). Do not edit by hand: `make evaluate` rewrites this file.\n",
        _METRICS_TEXT,
        "## Summary\n",
        summary_table(summaries),
        f"\n![ranking and efficiency per scenario]({plot_dir}/summary.png)\n",
        "## Acceptance bars\n",
        "The project's bars for the default policy, checked on every run:\n",
        *[f"- {bar};" for bar in BARS],
        "",
    ]
    failed = [c for c in checks if not c.ok]
    passed = len(checks) - len(failed)
    out.append(f"{passed} of {len(checks)} checks pass.\n")
    if failed:
        out.append("| scenario | check | result |\n|---|---|---|")
        out.extend(f"| {c.scenario} | {c.what} | missed: {c.detail} |" for c in failed)
        out.append("")
    suite_checks = [c for c in checks if c.scenario == "suite"]
    if suite_checks:
        out.append(
            "Suite: " + "; ".join(f"{c.what}: {'yes' if c.ok else 'no'} ({c.detail})" for c in suite_checks)
        )
        out.append("")
    out.append("## Scenarios\n")
    for scenario in dict.fromkeys(m.scenario for m in metrics):
        rows = [m for m in metrics if m.scenario == scenario]
        run = next(r for r in results if r.metrics.scenario == scenario)
        out.append(f"### {scenario}\n")
        desc = scenario_description(sources.get(scenario, ""))
        hours = run.duration_s / SECONDS_PER_HOUR
        out.append(f"{desc} ({run.guests} guests, {hours:g} h simulated.)\n" if desc else "")
        out.append(metrics_table(rows))
        if days := days_table(rows):
            out.append(days)
        for note in reference_notes(rows):
            out.append(f"- {note}")
        out.append(f"\n![{scenario}]({plot_dir}/{scenario}.png)\n")
    return "\n".join(out)


def write_report(
    directory: Path,
    results: Sequence[RunResult],
    summaries: Sequence[PolicySummary],
    checks: Sequence[Check],
    *,
    wall_s: float,
    command: str,
    sources: dict[str, str],
) -> Path:
    """Write ``directory/evaluation.md`` and ``directory/evaluation/*.png``; returns the Markdown path."""
    plot_dir = directory / "evaluation"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for scenario in dict.fromkeys(r.metrics.scenario for r in results):
        plot_scenario([r for r in results if r.metrics.scenario == scenario], plot_dir / f"{scenario}.png")
    plot_summary(summaries, [r.metrics for r in results], plot_dir / "summary.png")
    text = render_markdown(
        results, summaries, checks, wall_s=wall_s, command=command, plot_dir="evaluation", sources=sources
    )
    path = directory / "evaluation.md"
    path.write_text(text, encoding="utf-8")
    return path
