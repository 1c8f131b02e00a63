"""The ``--production`` side of ``autoballoon evaluate``: scenarios in, runs one at a time, tables and the
report section out; or, with ``--from-record``, the report again from recordings without booting anything.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import click

from autoballoon.evaluate.production.metrics import run_metrics, summarize
from autoballoon.evaluate.production.report import app_table, summary_table, write_section
from autoballoon.evaluate.production.runner import PLAYED, run_scenario
from autoballoon.evaluate.production.scenario import load_prod_scenario
from autoballoon.evaluate.production.trace import ProdTrace, read_prod_traces
from autoballoon.evaluate.real.bench import lease
from autoballoon.evaluate.runner import find_scenarios
from autoballoon.policy import parse_policies
from autoballoon.rig.errors import RigError

DEFAULT_SCENARIOS = "scenarios/production"
RUN_FILE = "run.json"


def _command(paths: Sequence[str], policies: str, report: str | None, record: Path | None) -> str:
    parts = ["autoballoon --connect qemu:///system evaluate --production"]
    parts += [f"--scenarios {p}" for p in paths]
    if policies != "all":
        parts.append(f"--policies {policies}")
    if record is not None:
        parts.append(f"--record {record}")
    if report is not None:
        parts.append(f"--report {report}")
    return " ".join(parts)


def _play(
    paths: Sequence[str],
    policies: str,
    record: Path | None,
    lease_path: Path | None,
    say: Callable[[str], None],
) -> tuple[list[ProdTrace], float]:
    """Validate every scenario first (no guest boots for a bad file), then run them under the lease."""
    from autoballoon.rig.session import open_session  # needs libvirt-python

    names = parse_policies(policies, PLAYED)
    scenarios = [load_prod_scenario(p) for p in find_scenarios(list(paths) or [DEFAULT_SCENARIOS])]
    runs: list[ProdTrace] = []
    started = time.monotonic()
    with lease(lease_path), tempfile.TemporaryDirectory(prefix="autoballoon-prod-") as work:
        session = open_session()
        try:
            for scenario in scenarios:
                runs += run_scenario(scenario, names, session, Path(work) / scenario.name, record, say)
        finally:
            left = session.close()
        if left:
            raise RigError(f"daemons the rig started are still running: {', '.join(left)}")
    return runs, time.monotonic() - started


def evaluate_production(
    paths: Sequence[str],
    policies: str,
    report_dir: str | None,
    record_dir: Path | None,
    lease_path: Path | None,
    *,
    as_json: bool,
    from_record: Path | None = None,
) -> None:
    # With --json, stdout is the JSON document alone: progress goes to stderr.
    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    if from_record is not None:
        runs = read_prod_traces(from_record)
        meta_path = from_record / RUN_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        command = str(meta.get("command", "")) + (
            f" (report re-made from its recordings: evaluate --production --from-record {from_record})"
        )
        wall_s = float(meta.get("wall_s", 0.0))
    else:
        command = _command(paths, policies, report_dir, record_dir)
        runs, wall_s = _play(paths, policies, record_dir, lease_path, say)
        if record_dir is not None:
            (record_dir / RUN_FILE).write_text(json.dumps({"command": command, "wall_s": round(wall_s, 1)}))
    rows = summarize([run_metrics(r) for r in runs])
    if report_dir is not None:
        path = write_section(Path(report_dir), runs, command=command, wall_s=wall_s)
        click.echo(f"report: {path}", err=as_json)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    for scenario in dict.fromkeys(r.scenario for r in rows):
        mine = [r for r in rows if r.scenario == scenario]
        click.echo(f"\n{scenario}\n\n{summary_table(mine)}")
        for app in mine[0].apps:
            if app.slowdown_pct is not None or app.merit is not None:
                click.echo(f"{scenario}: {app.guest} ({app.app})\n\n{app_table(mine, app.guest)}")
    click.echo(f"{len(runs)} runs in {wall_s / 60:.1f} min wall")
