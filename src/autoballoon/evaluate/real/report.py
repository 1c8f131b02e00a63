"""The real-guest report: ``evaluation-real.md`` with a table per workload, and PNG plots beside it.

Rows are ordered harm first (OOM kills, then seconds above the budget, then pressure seconds), then by
memory reclaimed. Each workload's plot has one panel per (guest, policy): the daemon's target, the
balloon's actual size and what the guest's workload uses, over the run, with the workload's commands
marked and every OOM kill crossed out in red.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoballoon.evaluate.real.metrics import F64, RunMetrics, column, ranked, run_metrics
from autoballoon.evaluate.real.metrics import __doc__ as METRICS_RULES
from autoballoon.evaluate.real.trace import GuestTrace, RunTrace
from autoballoon.evaluate.report import DPI, _pyplot, scenario_description
from autoballoon.evaluate.sections import PRODUCTION
from autoballoon.units import MiB, format_size

REPORT_NAME = "evaluation-real.md"
PLOT_DIR = "evaluation-real"
PANEL_W_IN = 3.6
PANEL_H_IN = 2.0

_HEADER = (
    "| policy | OOM kills | above budget s | pressure s | reclaimed MiB (balloon) | reclaimed MiB (host) "
    "| budget unused MiB | lowest MemAvailable MiB | reaction p50 s | reaction max s "
    "| growths not followed |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
)


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MiB:.0f}"


def metrics_table(rows: Sequence[RunMetrics]) -> str:
    lines = [
        f"| {m.policy} | {m.oom_kills} | {m.above_budget_s:.0f} | {m.pressure_s:.0f} "
        f"| {_mib(m.reclaimed_balloon)} | {_mib(m.reclaimed_host)} | {_mib(m.budget_unused)} "
        f"| {_mib(m.lowest_available)} | {_f(m.reaction_p50_s, '.1f')} "
        f"| {_f(m.reaction_max_s, '.1f')} | {m.unanswered} |"
        for m in ranked(rows)
    ]
    return _HEADER + "\n".join(lines) + "\n"


def guest_used(g: GuestTrace) -> F64:
    """What the guest's workload and kernel use, as the guest sees it: MemTotal - MemAvailable, less
    the balloon where the guest counts ballooned pages as used (autodeflate keeps MemTotal whole)."""
    used = column(g, "guest_mem_total") - column(g, "guest_mem_available")
    if g.autodeflate:
        used = used - (g.memory - column(g, "actual"))
    return used


def plot_workload(runs: Sequence[RunTrace], out: Path) -> None:
    """One panel per (guest, policy): target, actual, guest used, max; commands and OOM kills marked."""
    plt = _pyplot()
    n_guests = len(runs[0].guests)
    fig, axes = plt.subplots(
        n_guests,
        len(runs),
        figsize=(PANEL_W_IN * len(runs), PANEL_H_IN * n_guests + 0.6),
        sharex=True,
        sharey="row",
        squeeze=False,
        dpi=DPI,
    )
    for col, run in enumerate(runs):
        for row, g in enumerate(run.guests):
            ax = axes[row][col]
            t = column(g, "t")
            ax.axhline(g.memory / MiB, color="black", lw=0.8, ls="--", label="max")
            ax.step(t, column(g, "target") / MiB, where="post", color="tab:blue", lw=1.2, label="target")
            ax.plot(t, column(g, "actual") / MiB, color="tab:green", lw=1.0, label="actual")
            ax.plot(t, guest_used(g) / MiB, color="tab:red", lw=1.0, label="guest used")
            for c in g.commands:
                if c.started_s is not None:
                    ax.axvline(c.started_s, color="gray", lw=0.6, ls=":")
            kills = column(g, "oom_kill")
            rose = np.flatnonzero(np.nan_to_num(np.diff(kills), nan=0.0) > 0) + 1
            ax.plot(t[rose], np.full(rose.size, g.memory / MiB * 0.5), "x", color="red", ms=9, mew=2)
            ax.set_ylim(0, g.memory / MiB * 1.05)
            if row == 0:
                ax.set_title(run.policy, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{g.name}\nMiB", fontsize=8)
            if row == n_guests - 1:
                ax.set_xlabel("s", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(out)
    plt.close(fig)


def _rules_text() -> str:
    body = (METRICS_RULES or "").split("\n\n", 1)[-1]
    return body.strip() + "\n"


def render_mechanisms(results: Sequence[Mapping[str, Any]]) -> str:
    """The reclaim mechanisms' section, from ``bench/bench_mechanisms.py --json``'s results."""
    rows = [
        "## Reclaim mechanisms: balloon, free page reporting, virtio-mem\n",
        "`flock /run/lock/autoballoon-rig.lease .venv/bin/python bench/bench_mechanisms.py --json "
        "RECORD/mechanisms.json` (`make mechbench`): two fresh 512 MiB plain-QEMU guests per mechanism under "
        "the daemon on `qmp://` (default policy, budget 800 MiB), the same workload in each, QEMU's RSS "
        "sampled every second; `none` is the same guests without a daemon. How each mechanism works and "
        "when it is right: [docs/mechanisms.md](mechanisms.md).\n",
        "| mechanism | OOM kills | pressure s | reclaimed at the host MiB (2 × 512 − mean QEMU RSS) | "
        "mean QEMU RSS MiB | final QEMU RSS MiB | actions |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        pressure = r.get("pressure_s")
        rows.append(
            f"| {r['mechanism']} | {r['oom_kills']} | {'n/a' if pressure is None else f'{pressure:.1f}'} | "
            f"{r['reclaimed_mib']:.0f} | {r['mean_rss_mib']:.0f} | {r['final_rss_mib']:.0f} | "
            f"{r['actions']} |"
        )
    return "\n".join(rows) + "\n"


def render_markdown(
    runs: Sequence[RunTrace],
    *,
    command: str,
    wall_s: float,
    calibration_md: str | None,
    mechanisms_md: str | None = None,
) -> str:
    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    policies = list(dict.fromkeys(r.policy for r in runs))
    out = [
        "# Evaluation on real guests: the default policy against MOM, Proxmox and static\n",
        f"Generated by `{command}`: {len(runs)} runs ({len(scenarios)} workloads × {len(policies)} policies: "
        f"{', '.join(policies)}) in {wall_s / 60:.1f} min wall on a {host_description()}. "
        "Do not edit by hand: "
        "`make realbench` rewrites this file, all but the production-like guests' section "
        "(`make prodbench`). "
        "How the harness works: [docs/rig.md](rig.md).\n",
        f"Each run boots fresh rig guests (Linux 6.1, busybox, {_accels(runs)}, virtio balloon with stats "
        "every second), "
        "starts `autoballoon run` as a subprocess with the policy, the workload's `[host] budget` and only "
        "its own guests to manage, plays the workload over the guests' control channels and samples every "
        "guest about every 0.5 s. The raw traces are in the recordings directory given to `--record`.\n",
        "## How results are measured\n",
        _rules_text(),
    ]
    if calibration_md:
        out.append(calibration_md)
    out.append("## Workloads\n")
    for scenario in scenarios:
        mine = [r for r in runs if r.scenario == scenario]
        first = mine[0]
        out.append(f"### {scenario}\n")
        desc = scenario_description(first.source)
        guests = ", ".join(
            f"{g.name} ({format_size(g.memory)}{', autodeflate' if g.autodeflate else ''}"
            f"{f', swap {format_size(g.swap)}' if g.swap else ''})"
            for g in first.guests
        )
        out.append(f"{desc}\n" if desc else "")
        out.append(
            f"Guests: {guests}; budget {format_size(first.budget)}; {first.duration_s:g} s. Workload: "
            + "; ".join(
                f"{g.name}: " + ", ".join(f"{c.at_s:g} s `{c.text}`" for c in g.commands)
                for g in first.guests
            )
            + ".\n"
        )
        out.append(metrics_table([run_metrics(r) for r in mine]))
        loads = [x for r in mine if r.host_load for x in r.host_load]
        if loads:
            out.append(
                f"\nHost load average (1 min) during these runs: {min(loads):.1f} to {max(loads):.1f}."
            )
        out.append(f"\n![{scenario}]({PLOT_DIR}/{scenario}.png)\n")
    if mechanisms_md:
        out.append(mechanisms_md)
    return "\n".join(out)


def _accels(runs: Sequence[RunTrace]) -> str:
    """Which accelerator the guests ran on; traces from before the rig recorded it all ran under TCG."""
    return " and ".join(sorted({(r.accel or "tcg").upper() for r in runs}))


def host_description() -> str:
    import os

    return f"{os.cpu_count()}-CPU {platform.machine()} host, Linux {platform.release()}"


def write_report(
    directory: Path,
    runs: Sequence[RunTrace],
    *,
    command: str,
    wall_s: float,
    calibration_md: str | None = None,
    mechanisms_md: str | None = None,
) -> Path:
    """Write ``directory/evaluation-real.md`` and its plots under ``directory/evaluation-real/``."""
    plots = directory / PLOT_DIR
    plots.mkdir(parents=True, exist_ok=True)
    for scenario in dict.fromkeys(r.scenario for r in runs):
        plot_workload([r for r in runs if r.scenario == scenario], plots / f"{scenario}.png")
    path = directory / REPORT_NAME
    text = render_markdown(
        runs, command=command, wall_s=wall_s, calibration_md=calibration_md, mechanisms_md=mechanisms_md
    )
    # The production-like guests' section is another benchmark's (make prodbench): keep it as it is.
    kept = PRODUCTION.find(path.read_text(encoding="utf-8")) if path.exists() else None
    path.write_text(PRODUCTION.splice(text, kept) if kept else text, encoding="utf-8")
    return path
