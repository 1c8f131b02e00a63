"""The ``--real`` side of ``autoballoon evaluate``: options in, matrix run, tables and report out."""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from autoballoon.errors import InvalidValueError
from autoballoon.evaluate.real.bench import load_scenarios, run_real
from autoballoon.evaluate.real.calibration import Calibration, calibration_from_json, render_calibration
from autoballoon.evaluate.real.metrics import ranked, run_metrics
from autoballoon.evaluate.real.report import metrics_table, render_mechanisms, write_report
from autoballoon.evaluate.real.trace import RunTrace, read_trace
from autoballoon.evaluate.runner import find_scenarios
from autoballoon.policy import POLICIES, parse_policies

DEFAULT_SCENARIOS = "scenarios/real"
#: What a recordings directory holds besides the traces: the run's command and wall time.
RUN_FILE = "run.json"
CALIBRATION_FILE = "calibration.json.gz"
#: The reclaim mechanisms' results (``bench/bench_mechanisms.py --json``), reported when present.
MECHANISMS_FILE = "mechanisms.json"


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
    from_record: Path | None = None,
) -> None:
    """Validate everything first (no guest boots for a bad file), then run, print and report; or, with
    ``from_record``, report on recordings made earlier without booting anything."""
    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    if from_record is not None:
        runs, meta, cal = load_recordings(from_record)
        command, wall_s = str(meta.get("command", "")), float(meta.get("wall_s", 0.0))
        command += f" (report re-made from its recordings: evaluate --real --from-record {from_record})"
    else:
        names = parse_policies(policies)
        scenarios = load_scenarios(find_scenarios(list(scenario_paths) or [DEFAULT_SCENARIOS]))
        command = _command(scenario_paths, policies, report_dir, record_dir, calibrate)
        cal = measure_physics(record_dir, lease_path, say) if calibrate else None
        with tempfile.TemporaryDirectory(prefix="autoballoon-real-") as work:
            results = run_real(
                scenarios, names, work=Path(work), record=record_dir, lease_path=lease_path, progress=say
            )
        runs, wall_s = list(results.runs), results.wall_s
        if record_dir is not None:
            (record_dir / RUN_FILE).write_text(json.dumps({"command": command, "wall_s": round(wall_s, 1)}))
    calibration_md = render_calibration(cal) if cal is not None else None
    mechanisms_md = _mechanisms(from_record or record_dir)
    if report_dir is not None:
        path = write_report(
            Path(report_dir),
            runs,
            command=command,
            wall_s=wall_s,
            calibration_md=calibration_md,
            mechanisms_md=mechanisms_md,
        )
        say(f"report: {path}")
    metrics = [m for s in dict.fromkeys(r.scenario for r in runs) for m in ranked(
        [run_metrics(r) for r in runs if r.scenario == s])]  # fmt: skip
    if as_json:
        click.echo(json.dumps([asdict(m) for m in metrics], indent=2))
        return
    for scenario in dict.fromkeys(m.scenario for m in metrics):
        click.echo(f"\n{scenario}\n")
        click.echo(metrics_table([m for m in metrics if m.scenario == scenario]))
    click.echo(f"{len(runs)} runs in {wall_s / 60:.1f} min wall")


def _mechanisms(directory: Path | None) -> str | None:
    """The mechanisms' section, if the recordings directory holds their results."""
    path = directory / MECHANISMS_FILE if directory is not None else None
    if path is None or not path.exists():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        return render_mechanisms(results)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidValueError(str(path), repr(exc), "bench/bench_mechanisms.py --json's results") from None


def measure_physics(
    record_dir: Path | None, lease_path: Path | None, say: Callable[[str], None]
) -> Calibration:
    """The calibration probes; their raw data goes with the traces (trial samples included)."""
    from autoballoon.evaluate.real.calibrate import calibrate

    cal = calibrate(lease_path=lease_path, progress=say)
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        with gzip.open(record_dir / CALIBRATION_FILE, "wt", encoding="utf-8") as fh:
            json.dump(cal.to_json(), fh, separators=(",", ":"))
    say(render_calibration(cal))
    return cal


def load_recordings(directory: Path) -> tuple[list[RunTrace], dict[str, Any], Calibration | None]:
    """Every trace of a recordings directory (scenario order, then policy order), the run's command and
    wall time, and the calibration if one was recorded."""
    paths = sorted(directory.glob("*--*.json.gz"))
    if not paths:
        raise InvalidValueError(
            "--from-record", str(directory), "a directory of recorded runs (*--*.json.gz)"
        )
    order = {p: i for i, p in enumerate(POLICIES)}
    runs = sorted((read_trace(p) for p in paths), key=lambda r: (r.scenario, order.get(r.policy, len(order))))
    meta_path = directory / RUN_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    cal_path = directory / CALIBRATION_FILE
    cal = None
    if cal_path.exists():
        with gzip.open(cal_path, "rt", encoding="utf-8") as fh:
            cal = calibration_from_json(json.load(fh))
    return runs, meta, cal
