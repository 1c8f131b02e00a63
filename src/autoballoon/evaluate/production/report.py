"""The production-like guests' section of ``docs/evaluation-real.md``: tables per workload and the plot of
host memory returned against slowdown. The section lives between two markers, so that the busybox report
(``make realbench``) and this one (``make prodbench``) each rewrite only their own part of the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autoballoon.evaluate.production.metrics import PolicySummary, Spread, run_metrics, summarize
from autoballoon.evaluate.production.metrics import __doc__ as RULES
from autoballoon.evaluate.production.trace import ProdTrace
from autoballoon.evaluate.real.report import PLOT_DIR, REPORT_NAME, host_description
from autoballoon.evaluate.report import COLORS, DPI, _pyplot, scenario_description
from autoballoon.evaluate.sections import PRODUCTION
from autoballoon.units import GiB, format_size

APP_TITLES = {
    "db": "PostgreSQL, pgbench select-only (tps)",
    "web": "nginx static files, wrk (requests/s)",
    "batch": "batch sort of a cached file (s)",
    "idle": "idle, cold page cache",
}
PANEL_IN = 3.6
OTHER_COLOR = "tab:purple"


def _cell(s: Spread | None, fmt: str, scale: float = 1.0) -> str:
    if s is None:
        return "–"
    med, low, high = (format(v / scale, fmt) for v in (s.median, s.low, s.high))
    return med if low == high else f"{med} ({low}–{high})"


def summary_table(rows: Sequence[PolicySummary]) -> str:
    head = (
        "| policy | runs | OOM kills | RSS above budget s | s at OOM edge | PSI some s | PSI full s "
        "| swap-in pages | host memory returned GiB·s (vs static) | balloon GiB·s | accuracy |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = [
        f"| {r.policy} | {r.runs} | {_cell(r.oom_kills, '.0f')} | {_cell(r.rss_above_budget_s, '.0f')} "
        f"| {_cell(r.oom_edge_s, '.0f')} | {_cell(r.psi_some_s, '.1f')} | {_cell(r.psi_full_s, '.1f')} "
        f"| {_cell(r.swap_in, '.0f')} | {_cell(r.returned_vs_static, '.0f', GiB)} "
        f"| {_cell(r.balloon, '.0f', GiB)} | {_cell(r.accuracy, '.3f')} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def app_table(rows: Sequence[PolicySummary], guest: str) -> str:
    head = (
        "| policy | merit | p99 latency ms | slowdown % | failed runs | refaults (pages) | accuracy "
        "| host memory returned GiB·s (vs static) |\n|---|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = []
    for r in rows:
        a = next(x for x in r.apps if x.guest == guest)
        lines.append(
            f"| {r.policy} | {_cell(a.merit, '.1f')} | {_cell(a.p99_ms, '.1f')} "
            f"| {_cell(a.slowdown_pct, '+.1f')} | {a.failed} | {_cell(a.refaults, '.0f')} "
            f"| {_cell(a.accuracy, '.3f')} "
            f"| {_cell(r.returned_vs_static, '.0f', GiB)} |"
        )
    return head + "\n".join(lines) + "\n"


def plot_tradeoff(rows: Sequence[PolicySummary], out: Path) -> None:
    """Per application: host memory returned (vs static) against its slowdown, one point per policy with
    the repetitions' spread as error bars. Up and to the left is better."""
    plt = _pyplot()
    guests = [a.guest for a in rows[0].apps if a.slowdown_pct is not None]
    fig, axes = plt.subplots(1, max(1, len(guests)), figsize=(PANEL_IN * max(1, len(guests)), PANEL_IN),
                             squeeze=False, dpi=DPI, sharey=True)  # fmt: skip
    apps = {a.guest: a.app for a in rows[0].apps}
    for ax, guest in zip(axes[0], guests, strict=False):
        for r in rows:
            a = next(x for x in r.apps if x.guest == guest)
            if a.slowdown_pct is None or r.returned_vs_static is None:
                continue
            s, y = a.slowdown_pct, r.returned_vs_static
            ax.errorbar(
                [s.median], [y.median / GiB],
                xerr=[[s.median - s.low], [s.high - s.median]],
                yerr=[[(y.median - y.low) / GiB], [(y.high - y.median) / GiB]],
                fmt="o", capsize=3, color=COLORS.get(r.policy, OTHER_COLOR), label=r.policy,
            )  # fmt: skip
        ax.axvline(0, color="gray", lw=0.6, ls=":")
        ax.set_title(f"{guest} ({apps[guest]})", fontsize=9)
        ax.set_xlabel("slowdown vs static, %", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("host memory returned vs static, GiB·s", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not labels:  # without static runs there is no slowdown to plot against
        fig.text(0.5, 0.5, "no static runs: no slowdown to plot", ha="center", fontsize=9)
    else:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    fig.savefig(out)
    plt.close(fig)


def render_section(runs: Sequence[ProdTrace], *, command: str, wall_s: float) -> str:
    rows = summarize([run_metrics(r) for r in runs])
    accels = ", ".join(sorted({r.accel.upper() for r in runs}))
    policies = list(dict.fromkeys(r.policy for r in runs))
    rules = (RULES or "").split("\n\n", 1)[-1].strip()
    out = [
        PRODUCTION.begin,
        "## Production-like guests: host memory returned against application slowdown\n",
        f"Generated by `{command}`: {len(runs)} runs ({', '.join(policies)}) in {wall_s / 60:.0f} min wall "
        f"on a {host_description()}, guests under "
        f"{accels}. The guests are Debian 12 with systemd, PostgreSQL and nginx, aged before each run so "
        "that their page cache is warm and QEMU's RSS stands near `<memory>`: "
        "[docs/rig.md](rig.md#the-production-like-guest) says how. Runs go one at a time, the policies in "
        "a rotated order per repetition.\n",
        rules + "\n",
    ]
    for scenario in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in rows if r.scenario == scenario]
        first = next(r for r in runs if r.scenario == scenario)
        guests = ", ".join(f"{g.name} ({format_size(g.memory)}, {g.app})" for g in first.guests)
        desc = scenario_description(first.source)
        out.append(f"### {scenario}\n")
        out.append(f"{desc}\n" if desc else "")
        out.append(f"Guests: {guests}; budget {format_size(first.budget)}; {first.duration_s:g} s measured "
                   f"per run, in windows of {first.window_s:g} s.\n")  # fmt: skip
        out.append(summary_table(mine))
        for g in first.guests:
            if g.app == "idle":
                continue
            out.append(f"\n#### {scenario}: {g.name}, {APP_TITLES[g.app]}\n")
            out.append(app_table(mine, g.name))
        out.append(
            f"\n![{scenario}: host memory returned against slowdown]({PLOT_DIR}/production-{scenario}.png)\n"
        )
    out.append(PRODUCTION.end)
    return "\n".join(out) + "\n"


def write_section(directory: Path, runs: Sequence[ProdTrace], *, command: str, wall_s: float) -> Path:
    """Write the section into ``directory/evaluation-real.md`` and its plots beside the busybox ones."""
    plots = directory / PLOT_DIR
    plots.mkdir(parents=True, exist_ok=True)
    rows = summarize([run_metrics(r) for r in runs])
    for scenario in dict.fromkeys(r.scenario for r in runs):
        plot_tradeoff([r for r in rows if r.scenario == scenario], plots / f"production-{scenario}.png")
    path = directory / REPORT_NAME
    old = path.read_text(encoding="utf-8") if path.exists() else "# Evaluation on real guests\n"
    path.write_text(
        PRODUCTION.splice(old, render_section(runs, command=command, wall_s=wall_s)), encoding="utf-8"
    )
    return path
