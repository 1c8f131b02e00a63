"""``autoballoon evaluate``: every policy on every scenario, a table per scenario, and a report."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from autoballoon.cli import cli
from autoballoon.cli.output import emit_json
from autoballoon.evaluate.metrics import SEVERE_HARM, Metrics, harm
from autoballoon.evaluate.policies import CONTENDERS, ORACLE
from autoballoon.evaluate.runner import find_scenarios, run_suite, scenario_name
from autoballoon.evaluate.summary import PolicySummary, acceptance, ranked, summarize
from autoballoon.policy import parse_policies

#: Short headers so that a table fits 100 columns, harm before efficiency as in the ranking: OOM kills,
#: host-overrun s, pressure VM-s, CPU-storm VM-s, reclaimed GiB-h, oracle efficiency, reaction p50/p99 s,
#: policy CPU ms per tick. Rows come in ranking order (harm first); a ⚠ marks OOM kills or overrun.
_COLUMNS = [
    "POLICY",
    "OOM",
    "OVERRUN s",
    "PRESS VM-s",
    "STORM VM-s",
    "GiB-h",
    "EFF",
    "p50 s",
    "p99 s",
    "ms/tick",
]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _label(m: Metrics | PolicySummary) -> str:
    return f"⚠ {m.policy}" if set(harm(m)) & set(SEVERE_HARM) else m.policy


def metric_row(m: Metrics) -> list[str]:
    return [
        _label(m),
        str(m.oom_kills),
        _num(m.host_overrun_s, ".0f"),
        _num(m.pressure_vm_s, ".0f"),
        _num(m.cpu_storm_vm_s, ".0f"),
        _num(m.reclaimed_gib_h, ".2f"),
        _num(m.oracle_efficiency, ".3f"),
        _num(m.reaction_p50_s, ".0f"),
        _num(m.reaction_p99_s, ".0f"),
        _num(m.cpu_per_tick_ms, ".3f"),
    ]


def summary_row(s: PolicySummary) -> list[str]:
    return [
        _label(s),
        str(s.oom_kills),
        _num(s.host_overrun_s, ".0f"),
        _num(s.pressure_vm_s, ".0f"),
        _num(s.cpu_storm_vm_s, ".0f"),
        _num(s.reclaimed_gib_h, ".2f"),
        _num(s.suite_efficiency, ".3f"),
        "-",
        _num(s.worst_reaction_p99_s, ".0f"),
        _num(s.cpu_per_tick_ms, ".3f"),
    ]


def _command(
    scenario_paths: tuple[str, ...], policies: str, overrides: tuple[str, ...], report_dir: str, seed: int
) -> str:
    """The command line that reproduces a report, for its header."""
    parts = ["autoballoon evaluate"]
    parts += [f"--scenarios {p}" for p in scenario_paths]
    if policies != "all":
        parts.append(f"--policies {policies}")
    parts += [f"--set {o}" for o in overrides]
    if seed:
        parts.append(f"--seed {seed}")
    parts.append(f"--report {report_dir}")
    return " ".join(parts)


def _table(title: str, rows: list[list[str]]) -> None:
    t = Table(title=title, show_edge=False, header_style="bold")
    for i, col in enumerate(_COLUMNS):
        t.add_column(col, justify="right" if i else "left", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    Console(soft_wrap=False, width=max(100, Console().width)).print(t)


@cli.command()
@click.option(
    "--scenarios",
    "scenario_paths",
    multiple=True,
    metavar="DIR|FILE",
    help="Scenario files, or directories of *.toml (repeatable). Default: ./scenarios.",
)
@click.option(
    "--policies",
    default="all",
    show_default=True,
    metavar="A,B,...",
    help=f"Comma-separated policies to compare: {', '.join(CONTENDERS)} (or 'all'). The oracle always "
    "runs, since efficiency is measured against it.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a tunable of the default policy, as in the config's [tunables] table "
    "(repeatable), e.g. --set buffer=0.15 --set min_headroom=128M.",
)
@click.option(
    "--report", "report_dir", type=click.Path(file_okay=False), help="Write DIR/evaluation.md + plots."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per (scenario, policy).")
@click.option("--seed", default=0, show_default=True, help="Seed of the demand traces' randomness.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel worker processes (default: one per CPU).",
)
@click.option(
    "--real",
    is_flag=True,
    help="Run on real guests under qemu:///system instead of the simulator (root, the rig: docs/rig.md); "
    "--scenarios then names real scenarios (default: ./scenarios/real).",
)
@click.option(
    "--production",
    is_flag=True,
    help="Run on production-like Debian guests under qemu:///system (root, the rig: docs/rig.md): host "
    "memory returned against application slowdown; --scenarios then names production scenarios "
    "(default: ./scenarios/production).",
)
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --real or --production: write each run's raw trace (JSON, gzip'd) here; with --production, "
    "runs already recorded there are read back instead of played again.",
)
@click.option(
    "--lease",
    "lease_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --real or --production: hold an exclusive flock on this file while guests are up.",
)
@click.option(
    "--from-record",
    "from_record",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="With --real or --production: report on the runs recorded in this directory (by --record) "
    "instead of running.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="With --real: also measure stats latency, balloon speed and the OOM edge (docs/evaluation-real.md).",
)
def evaluate(
    scenario_paths: tuple[str, ...],
    policies: str,
    overrides: tuple[str, ...],
    report_dir: str | None,
    as_json: bool,
    seed: int,
    workers: int | None,
    real: bool,
    production: bool,
    record_dir: Path | None,
    lease_path: Path | None,
    calibrate: bool,
    from_record: Path | None,
) -> None:
    """Run every policy on every scenario in the simulator and measure them (see docs/evaluation.md).

    Metrics per (scenario, policy): OOM kills, host-overrun seconds, pressure VM-seconds, reclaimed
    GiB-hours (harm is not credited), oracle efficiency, reaction time p50/p99, the policy's CPU time per
    tick. Tables rank policies by harm first, then efficiency. With --real: the same policies on real
    guests (see docs/evaluation-real.md); with --production: on production-like guests, by host memory
    returned and application slowdown.
    """
    if real and production:
        raise click.UsageError("--real and --production are two benchmarks: give one of them")
    if production:
        from autoballoon.evaluate.production.command import evaluate_production

        evaluate_production(scenario_paths, policies, report_dir, record_dir, lease_path, as_json=as_json,
                            from_record=from_record)  # fmt: skip
        return
    if real:
        from autoballoon.evaluate.real.command import evaluate_real

        evaluate_real(
            scenario_paths,
            policies,
            report_dir,
            record_dir,
            lease_path,
            calibrate=calibrate,
            as_json=as_json,
            from_record=from_record,
        )
        return
    names = parse_policies(policies, CONTENDERS)
    paths = find_scenarios(list(scenario_paths) or ["scenarios"])
    # The oracle always runs (efficiency is measured against it), and nothing else that was not asked
    # for; with the oracle named, in CONTENDERS' order as the tables always had it.
    oracle_named = ORACLE in names
    wanted = tuple(p for p in CONTENDERS if p in names) if oracle_named else (*names, ORACLE)
    started = time.perf_counter()
    everything = run_suite(
        paths,
        wanted,
        overrides,
        seed=seed,
        workers=workers,
    )
    wall = time.perf_counter() - started
    oracle = {r.metrics.scenario: r.metrics.reclaimed_gib_h for r in everything if r.metrics.policy == ORACLE}
    results = [r for r in everything if r.metrics.policy in names]
    metrics = [r.metrics for r in results]
    summaries = summarize(metrics, oracle)
    checks = acceptance(metrics, summaries)
    if report_dir is not None:
        from autoballoon.evaluate.report import write_report

        write_report(
            Path(report_dir),
            results,
            summaries,
            checks,
            wall_s=wall,
            command=_command(scenario_paths, policies, overrides, report_dir, seed),
            sources={scenario_name(p): str(p) for p in paths},
        )
    if as_json:
        emit_json([m.to_json() for m in metrics])
        return
    for scenario in dict.fromkeys(m.scenario for m in metrics):
        _table(scenario, [metric_row(m) for m in ranked([m for m in metrics if m.scenario == scenario])])
    _table(
        "suite, ranked by harm then efficiency (sums over scenarios; efficiency = sum / oracle's sum)",
        [summary_row(s) for s in ranked(summaries)],
    )
    failed = [c for c in checks if not c.ok]
    for c in failed:
        click.echo(f"bar missed: {c.scenario}: {c.what} ({c.detail})")
    click.echo(
        f"{len(results)} runs on {len(paths)} scenarios in {wall:.1f} s wall"
        + (f"; report in {report_dir}" if report_dir else "")
    )
