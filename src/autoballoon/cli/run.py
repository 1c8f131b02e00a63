"""``autoballoon run``: the daemon. Parses, wires backend + clock + config + journal into a Controller.

With a ``sim://`` URI the controller sleeps on the simulator's virtual clock (so ``?speed=20`` runs the
simulated host 20 times faster than life); otherwise on the real monotonic clock. SIGTERM and SIGINT
stop the loop cleanly and apply ``on_exit``; SIGHUP reloads the config (a bad one is refused and the old
kept) and reopens the journal file (for logrotate).

The daemon logs to stderr, so that journald shows it: one line per action with its figures and the rule
that bound it, one per status change and event (``--quiet``: warnings only; ``--verbose``: debug too).
Under systemd (``$JOURNAL_STREAM`` set) each line starts with its syslog priority (``<6>``), which journald
reads as the entry's level and strips.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from autoballoon.backends import open_backend
from autoballoon.cli import Context, cli, pass_ctx
from autoballoon.cli.output import cell, emit_json
from autoballoon.clock import Clock, RealClock
from autoballoon.config import DEFAULT_CONFIG_PATH, load_config
from autoballoon.controller import Controller, ControllerStatus, tune_collector
from autoballoon.errors import AutoballoonError
from autoballoon.journal import Journal
from autoballoon.model import Plan
from autoballoon.policy import POLICIES, create_policy
from autoballoon.reasons import action_text, explain, figures, size_text
from autoballoon.server import DEFAULT_LISTEN, Tls, check_listen, serve_controller
from autoballoon.state import StateStore
from autoballoon.units import human

#: syslog priorities of the logging levels, for journald's level prefix (sd-daemon(3)).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournaldFormatter(logging.Formatter):
    """``<priority>message``: journald stores the level and shows the message (it adds the time)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


@contextmanager
def daemon_logging(level: int) -> Iterator[None]:
    """The ``autoballoon`` loggers to stderr at ``level`` for the daemon's run, then as they were."""
    logger = logging.getLogger("autoballoon")
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournaldFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def plan_lines(c: Controller, plan: Plan | None) -> list[str]:
    """What one decision does to every VM, as ``run --once`` prints it: each action with its figures and
    rule, and each VM left where it is with its status and why."""
    snapshot = c.status(journal_entries=0).snapshot
    if plan is None or snapshot is None:
        return [f"no plan: {c.status(journal_entries=0).last_error or 'the hypervisor was not read'}"]
    moved = {e.get("vm") for e in c.journal.recent() if e.get("kind") == "action"}
    lines = [action_text(e) for e in c.journal.recent() if e.get("kind") == "action"]
    for g in snapshot.guests:
        if g.name in moved:
            continue
        status = plan.status.get(g.name, "")
        why = plan.status_reason.get(g.name, "")
        fig = figures(plan.guests.get(g.name), g.target_bytes, g.target_bytes)
        detail = "; ".join(x for x in (why, explain(fig)) if x)
        lines.append(
            f"{cell(g.name)}: {status}, stays at {size_text(g.target_bytes)}"
            + (f"; {detail}" if detail else "")
        )
    return lines


def plan_json(c: Controller, plan: Plan | None) -> list[dict[str, Any]]:
    """``run --once --json``: every VM with its status, its target before and after the decision, the
    action's reason (None when it stays) and the figures and rule behind it (sizes in bytes)."""
    snapshot = c.status(journal_entries=0).snapshot
    if plan is None or snapshot is None:
        return []
    moves = {a.vm: a for a in plan.actions}
    out = []
    for g in snapshot.guests:
        action = moves.get(g.name)
        new = action.new_target if action is not None else g.target_bytes
        out.append(
            {
                "name": g.name,
                "status": plan.status.get(g.name, ""),
                "status_reason": plan.status_reason.get(g.name, ""),
                "target_bytes": g.target_bytes,
                "planned_target_bytes": new,
                "reason": action.reason if action is not None else None,
                "applied": not c.dry_run if action is not None else None,
                **{
                    (k if k == "rule" else f"{k}_bytes"): v
                    for k, v in figures(
                        plan.guests.get(g.name), g.target_bytes, new, action.reason if action else None
                    ).items()
                },
            }
        )
    return out


def status_table(status: ControllerStatus) -> Group:
    """The live view: one row per VM, and the host budget under it."""
    table = Table(title=f"autoballoon on {status.uri}" + (" (dry run)" if status.dry_run else ""))
    for column in ("VM", "MAX", "TARGET", "ACTUAL", "USED", "WANT", "STATUS"):
        table.add_column(column, justify="left" if column in ("VM", "STATUS") else "right")
    for vm in status.vms:
        label = vm.status + (" (pressure)" if vm.pressure else "")
        table.add_row(
            cell(vm.name),
            human(vm.max_bytes),
            human(vm.target_bytes),
            human(vm.actual_bytes),
            human(vm.used_bytes),
            human(vm.want_bytes),
            cell(label),
        )
    snap = status.snapshot
    parts = [
        f"host available {human(snap.mem_available) if snap else '-'}",
        f"budget {human(status.budget_bytes)}",
        f"reserve {human(status.reserve_bytes)}",
        f"t={status.time:.0f}s" if status.time is not None else "",
        " ".join(f"{k} {v}" for k, v in sorted(status.actions_by_direction.items())),
        "HOST SHORT" if status.host_short else "",
        "" if status.connected else f"DISCONNECTED: {status.last_error}",
    ]
    host = cell(" · ".join(p for p in parts if p))
    return Group(table, host)


@cli.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"TOML config file (default: {DEFAULT_CONFIG_PATH} when it exists).",
)
@click.option(
    "--policy",
    "policy_name",
    type=click.Choice(tuple(POLICIES)),
    default="autoballoon",
    show_default=True,
    help="The balloon policy: autoballoon's own, or a published reference (oVirt MOM, Proxmox VE, or none) "
    "to compare on this host, e.g. with --dry-run. A reference policy runs at its own published interval; "
    "with a [host] budget it sees the budget as its host's memory.",
)
@click.option(
    "--interval",
    type=float,
    default=None,
    help="Seconds between decisions of the autoballoon policy (default 2, at least 0.5).",
)
@click.option("--dry-run", is_flag=True, help="Decide and journal, but never change a VM.")
@click.option(
    "--journal", "journal_path", type=click.Path(dir_okay=False), default=None, help="JSON-lines journal."
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to keep what survives a restart: quarantines, manual holds, learned history (default: the "
    "config's 'state', else /var/lib/autoballoon/state.json; none for a sim:// host, which restarts fresh).",
)
@click.option("--once", is_flag=True, help="Run a single tick and exit (on_exit is still applied).")
@click.option("--table", "live_table", is_flag=True, help="Show a live table of the VMs until Ctrl-C.")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Serve the dashboard, /metrics and the JSON API here (port 0: any free port).",
)
@click.option(
    "--api-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Allow changes over the API (POST) to clients sending 'Authorization: Bearer <this token>'.",
)
@click.option("--no-http", is_flag=True, help="Serve nothing over HTTP.")
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors to stderr.")
@click.option("--verbose", "-v", is_flag=True, help="Log debug lines to stderr too.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the plan as JSON (sizes in bytes).")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host header is NAME (repeatable); by default only the listen "
    "address and, on loopback, localhost (a defence against DNS rebinding).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this PEM certificate (with --tls-key).",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The certificate's key."
)
@click.option(
    "--insecure-listen",
    is_flag=True,
    help="Allow a --listen address beyond loopback without TLS (the API token then crosses the "
    "network in clear).",
)
@pass_ctx
def run_command(ctx: Context, /, quiet: bool, verbose: bool, as_json: bool, **options: Any) -> None:
    """Run the auto-balloon daemon: keep every managed VM at the memory it needs.

    It logs every action and status change to stderr (journald under systemd). SIGHUP reloads the
    config (a bad one is refused, the old kept) and reopens the journal file. With --once it prints the
    plan of its one decision (with --dry-run: what it would do)."""
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose are opposites: give one")
    if as_json and not options["once"]:
        raise click.UsageError("--json prints the plan of one decision: it goes with --once")
    options["as_json"] = as_json
    # With --table the terminal shows the table; with --once the plan goes to stdout: only warnings then.
    quieter = quiet or options["live_table"] or options["once"]
    level = logging.DEBUG if verbose else logging.WARNING if quieter else logging.INFO
    with daemon_logging(level):
        _run(ctx, **options)


def _run(
    ctx: Context,
    config_path: Path | None,
    policy_name: str,
    interval: float | None,
    dry_run: bool,
    journal_path: str | None,
    state_path: str | None,
    once: bool,
    live_table: bool,
    listen: str,
    api_token_file: Path | None,
    no_http: bool,
    allow_hosts: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure_listen: bool,
    as_json: bool = False,
) -> None:
    config = load_config(config_path)
    if interval is not None:
        config = config.with_interval(interval)
    serving = not (no_http or once)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = Tls(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    if serving:  # a bad address, TLS or token file is refused before the journal file is created
        check_listen(listen, token_file=api_token_file, tls=tls, insecure=insecure_listen)
    journal = Journal(journal_path or config.journal_path, ring_size=config.tunables.journal_ring_size)
    backend = ctx.backend
    clock: Clock = getattr(backend, "clock", None) or RealClock()
    tune_collector(config.tunables)
    if state_path is None and not ctx.uri.startswith("sim:"):
        state_path = config.state_path
    controller = Controller(
        backend,
        clock,
        config,
        journal,
        dry_run=dry_run,
        reopen=lambda: open_backend(ctx.uri),
        uri=ctx.uri,
        policy=create_policy(policy_name, config.tunables),
        store=StateStore(state_path) if state_path is not None else None,
    )
    http = None
    if serving:
        http = serve_controller(
            controller,
            listen,
            token_file=api_token_file,
            allow_hosts=allow_hosts,
            tls=tls,
            insecure=insecure_listen,
        )
    if http is not None:
        click.echo(f"autoballoon: dashboard {http.url} · metrics {http.url}metrics · API {http.url}api/v1/")

    hangup = threading.Event()

    def reload(c: Controller) -> None:
        """SIGHUP, in the loop's thread: the config again (refused whole if bad), the journal reopened."""
        hangup.clear()
        c.journal.reopen()  # first: what the reload says goes to the new file
        try:
            config = load_config(config_path)
            if interval is not None:
                config = config.with_interval(interval)
        except AutoballoonError as e:
            message = f"reload refused, the configuration from {c.config.source} stays: {e}"
            c.journal.event(c.clock.wall(), "error", message, config=str(config_path or DEFAULT_CONFIG_PATH))
        else:
            c.reconfigure(config, create_policy(policy_name, config.tunables))

    def after_tick(c: Controller) -> None:
        if hangup.is_set():
            reload(c)
        if http is not None:
            http.on_tick(c)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            hangup.set()
        else:
            stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        if live_table:
            console = Console()
            with Live(console=console, auto_refresh=False) as live:

                def show(c: Controller) -> None:
                    after_tick(c)
                    live.update(status_table(c.status(journal_entries=0)), refresh=True)

                controller.run(stop, on_tick=show, max_ticks=1 if once else None)
        else:
            controller.run(stop, on_tick=after_tick, max_ticks=1 if once else None)
        if once and not live_table:
            plan = controller.status(journal_entries=0).plan
            if as_json:
                emit_json(plan_json(controller, plan))
            else:
                for line in plan_lines(controller, plan):
                    click.echo(line)
    finally:
        if http is not None:
            http.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        journal.close()
