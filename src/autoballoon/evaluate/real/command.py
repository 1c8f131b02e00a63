"""The ``--real`` side of ``autoballoon evaluate``: options in, matrix run, tables and report out."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import click

from autoballoon.cli.output import emit_json
from autoballoon.evaluate.real.bench import load_scenarios, parse_policies, run_real
from autoballoon.evaluate.real.report import metrics_table, write_report
from autoballoon.evaluate.runner import find_scenarios

DEFAULT_SCENARIOS = "scenarios/real"
CALIBRATION_FILE = "calibration.json.gz"


def _command(
    scenario_paths: tuple[str, ...],
    policies: str,
    report_dir: str | None,
    record: Path | None,
    calibrate: bool,
) -> str:
    parts = ["autoballoon --connect qemu:///system evaluate --real"]
    parts += [f"--scenarios {p}" for p in scenario_paths]
    if policies != "all":
        parts.append(f"--policies {policies}")
    if record is not None:
        parts.append(f"--record {record}")
    if calibrate:
        parts.append("--calibrate")
    if report_dir is not None:
        parts.append(f"--report {report_dir}")
    return " ".join(parts)


def evaluate_real(
    scenario_paths: tuple[str, ...],
    policies: str,
    report_dir: str | None,
    record_dir: Path | None,
    lease_path: Path | None,
    *,
    calibrate: bool,
    as_json: bool,
) -> None:
    """Validate everything first (no guest boots for a bad file), then run, print and report."""
    names = parse_policies(policies)
    scenarios = load_scenarios(find_scenarios(list(scenario_paths) or [DEFAULT_SCENARIOS]))
    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    calibration_md = None
    with tempfile.TemporaryDirectory(prefix="autoballoon-real-") as work:
        if calibrate:
            from autoballoon.evaluate.real.calibrate import calibrate as measure
            from autoballoon.evaluate.real.calibrate import render_calibration

            cal = measure(lease_path=lease_path, progress=say)
            calibration_md = render_calibration(cal)
            if record_dir is not None:  # raw data, with the traces: its trials' samples too
                record_dir.mkdir(parents=True, exist_ok=True)
                with gzip.open(record_dir / CALIBRATION_FILE, "wt", encoding="utf-8") as fh:
                    json.dump(cal.to_json(), fh, separators=(",", ":"))
            say(calibration_md)
        results = run_real(
            scenarios, names, work=Path(work), record=record_dir, lease_path=lease_path, progress=say
        )
    if report_dir is not None:
        path = write_report(
            Path(report_dir),
            results.runs,
            command=_command(scenario_paths, policies, report_dir, record_dir, calibrate),
            wall_s=results.wall_s,
            calibration_md=calibration_md,
        )
        say(f"report: {path}")
    if as_json:
        emit_json([_metrics_json(m) for m in results.metrics])
        return
    for scenario in scenarios:
        click.echo(f"\n{scenario.name}\n")
        click.echo(metrics_table([m for m in results.metrics if m.scenario == scenario.name]))
    click.echo(
        f"{len(results.runs)} runs on {len(scenarios)} workloads in {results.wall_s / 60:.1f} min wall"
    )


def _metrics_json(m: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    assert is_dataclass(m) and not isinstance(m, type)
    return asdict(m)
