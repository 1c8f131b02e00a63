"""The evaluation report: ``evaluation.md`` with the tables, and PNG plots in ``evaluation/`` beside it.

Plots use matplotlib's Agg backend (no display). Per scenario, one panel per drawn guest shows its demand,
its maximum and every policy's allocation over time, and a last panel the memory reclaimed host-wide;
one summary chart puts each policy's suite efficiency against its harm. Scenario descriptions are the
comment block at the top of each scenario file, so the report explains each scenario in its author's words.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autoballoon.errors import MissingDependencyError
from autoballoon.evaluate.metrics import Metrics
from autoballoon.evaluate.runner import RunResult
from autoballoon.evaluate.summary import DEFAULT_POLICY, REFERENCES, Check, PolicySummary
from autoballoon.units import GiB

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class ReportTunables:
    dpi: int = 90
    panel_width_in: float = 11.0
    panel_height_in: float = 2.2
    #: Line colours by policy (matplotlib's tab10), so a policy looks the same in every plot.
    colors: tuple[tuple[str, str], ...] = (
        ("autoballoon", "tab:blue"),
        ("mom", "tab:orange"),
        ("proxmox", "tab:green"),
        ("static", "tab:gray"),
        ("oracle", "tab:purple"),
    )


DEFAULT_REPORT = ReportTunables()

_HEADER = (
    "| policy | reclaimed GiB-h | oracle eff. | pressure VM-s | OOM kills | host overrun s "
    "| CPU storm VM-s | reaction p50 s | reaction p99 s | CPU ms/tick |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
)


#: Markdown joins these lines into one paragraph.
_METRICS_TEXT = """Metrics (DESIGN.md, "How results are measured"): **reclaimed** is the integral of
`sum(max) - sum(allocated)` in GiB-hours; **oracle efficiency** is reclaimed divided by the oracle's
on the same scenario (over the suite: sums divided by the oracle's sum); **pressure** is VM-seconds
with demand above what the guest has room for (it swaps); **OOM kills** happen inside guests;
**host overrun** is seconds with the host's available memory below its reserve; **CPU storm** is
VM-seconds a guest spins at 90 % or more of its vCPUs (the balloon CPU storm; not in `--json`);
**reaction** is the time from a demand step (a rise of at least max(128 MiB, 5 % of max) within
10 s) to the first moment
the guest's allocation covers demand again; **CPU** is the policy's process time per decision. The
oracle knows every guest's future demand and allocates it plus the kernel's minimal headroom (it
leaves a guest that storms its CPU when ballooned at its maximum).
"""


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def metrics_table(rows: Sequence[Metrics]) -> str:
    lines = [
        f"| {m.policy} | {m.reclaimed_gib_h:.2f} | {_f(m.oracle_efficiency, '.3f')} | {m.pressure_vm_s:.0f} "
        f"| {m.oom_kills} | {m.host_overrun_s:.0f} | {m.cpu_storm_vm_s:.0f} | {_f(m.reaction_p50_s, '.0f')} "
        f"| {_f(m.reaction_p99_s, '.0f')} | {_f(m.cpu_per_tick_ms, '.3f')} |"
        for m in rows
    ]
    return _HEADER + "\n".join(lines) + "\n"


def summary_table(rows: Sequence[PolicySummary]) -> str:
    header = (
        "| policy | reclaimed GiB-h (sum) | suite oracle eff. | pressure VM-s | OOM kills | host overrun s "
        "| CPU storm VM-s | worst reaction p99 s | CPU ms/tick (mean) |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = [
        f"| {s.policy} | {s.reclaimed_gib_h:.1f} | {_f(s.suite_efficiency, '.3f')} | {s.pressure_vm_s:.0f} "
        f"| {s.oom_kills} | {s.host_overrun_s:.0f} | {s.cpu_storm_vm_s:.0f} "
        f"| {_f(s.worst_reaction_p99_s, '.0f')} | {_f(s.cpu_per_tick_ms, '.3f')} |"
        for s in rows
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


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is in the eval and test extras
        raise MissingDependencyError(
            f"--report needs matplotlib: pip install 'autoballoon[eval]' ({e})"
        ) from e
    return plt


def plot_scenario(runs: Sequence[RunResult], out: Path, tun: ReportTunables = DEFAULT_REPORT) -> None:
    """Demand, max and each policy's allocation for the drawn guests, and host-wide reclaimed memory."""
    plt = _pyplot()
    colors = dict(tun.colors)
    first = runs[0].trace
    n_panels = len(first.guests) + 1
    fig, axes = plt.subplots(
        n_panels, 1, figsize=(tun.panel_width_in, tun.panel_height_in * n_panels), sharex=True, squeeze=False
    )
    hours = first.times / SECONDS_PER_HOUR
    for gi, guest in enumerate(first.guests):
        ax = axes[gi][0]
        ax.plot(hours, first.demand[:, gi] / GiB, color="black", lw=1.6, label="demand")
        ax.axhline(first.max[gi] / GiB, color="black", ls="--", lw=0.8, label="max")
        for r in runs:
            ax.plot(
                r.trace.times / SECONDS_PER_HOUR,
                r.trace.allocation[:, gi] / GiB,
                color=colors.get(r.metrics.policy),
                lw=1.0,
                label=r.metrics.policy,
            )
        ax.set_ylabel("GiB")
        ax.set_title(guest, loc="left", fontsize=9)
        ax.set_ylim(bottom=0)
    ax = axes[-1][0]
    for r in runs:
        ax.plot(
            r.trace.times / SECONDS_PER_HOUR,
            r.trace.reclaimed / GiB,
            color=colors.get(r.metrics.policy),
            lw=1.0,
            label=r.metrics.policy,
        )
    ax.set_title("reclaimed host-wide: sum(max) - sum(allocated)", loc="left", fontsize=9)
    ax.set_ylabel("GiB")
    ax.set_xlabel("hours")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=tun.dpi)
    plt.close(fig)


def plot_summary(
    summaries: Sequence[PolicySummary],
    metrics: Sequence[Metrics],
    out: Path,
    tun: ReportTunables = DEFAULT_REPORT,
) -> None:
    """Left: suite efficiency against total pressure (harm). Right: efficiency per scenario and policy."""
    plt = _pyplot()
    colors = dict(tun.colors)
    fig, (left, right) = plt.subplots(1, 2, figsize=(tun.panel_width_in, 4.2))
    for s in summaries:
        if s.suite_efficiency is None:
            continue
        harm_h = s.pressure_vm_s / SECONDS_PER_HOUR
        left.scatter([harm_h], [s.suite_efficiency], color=colors.get(s.policy), s=60, zorder=3)
        label = s.policy + (f"\n{s.oom_kills} OOM" if s.oom_kills else "")
        left.annotate(
            label, (harm_h, s.suite_efficiency), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    left.set_xscale("symlog", linthresh=1.0)
    left.set_xlim(left=-0.2)
    left.set_xlabel("pressure, VM-hours over the suite (harm; symlog)")
    left.set_ylabel("oracle efficiency over the suite")
    left.set_ylim(-0.05, 1.1)
    left.grid(alpha=0.3)
    left.set_title("efficiency against harm", fontsize=10)
    scenarios = list(dict.fromkeys(m.scenario for m in metrics))
    policies = [s.policy for s in summaries]
    width = 0.8 / max(1, len(policies))
    by = {(m.scenario, m.policy): m for m in metrics}
    for pi, policy in enumerate(policies):
        xs = [i + pi * width for i in range(len(scenarios))]
        ys = [(by[(sc, policy)].oracle_efficiency or 0.0) if (sc, policy) in by else 0.0 for sc in scenarios]
        right.bar(xs, ys, width=width, color=colors.get(policy), label=policy)
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(scenarios))])
    right.set_xticklabels(scenarios, rotation=45, ha="right", fontsize=8)
    right.set_ylabel("oracle efficiency")
    right.set_title("per scenario", fontsize=10)
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=tun.dpi)
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
        f"\n![efficiency against harm]({plot_dir}/summary.png)\n",
        "## Acceptance (issue 5)\n",
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
    tun: ReportTunables = DEFAULT_REPORT,
) -> Path:
    """Write ``directory/evaluation.md`` and ``directory/evaluation/*.png``; returns the Markdown path."""
    plot_dir = directory / "evaluation"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for scenario in dict.fromkeys(r.metrics.scenario for r in results):
        plot_scenario(
            [r for r in results if r.metrics.scenario == scenario], plot_dir / f"{scenario}.png", tun
        )
    plot_summary(summaries, [r.metrics for r in results], plot_dir / "summary.png", tun)
    text = render_markdown(
        results, summaries, checks, wall_s=wall_s, command=command, plot_dir="evaluation", sources=sources
    )
    path = directory / "evaluation.md"
    path.write_text(text, encoding="utf-8")
    return path
