"""``autoballoon release VM``: end a health-guard quarantine in the running daemon.

A quarantine lives in the daemon (it is the daemon that stopped ballooning the VM), so releasing one is a
request to the daemon's API (``POST /api/v1/vms/{name}/release``, with the API token), not a libvirt call.
When no daemon answers there is nothing to release, and the command says so.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import click

from autoballoon.cli import Context, cli, pass_ctx
from autoballoon.cli.output import emit_json, json_option, say
from autoballoon.cli.remote import DaemonUnreachable, applied, daemon_option, request
from autoballoon.errors import AutoballoonError
from autoballoon.server.auth import load_token

TOKEN_ENV = "AUTOBALLOON_API_TOKEN_FILE"


@cli.command()
@click.argument("vm")
@daemon_option
@click.option(
    "--api-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=TOKEN_ENV,
    default=None,
    help=f"The token file the daemon was started with (also ${TOKEN_ENV}).",
)
@json_option
@pass_ctx
def release(ctx: Context, vm: str, daemon_url: str, api_token_file: Path | None, as_json: bool) -> None:
    """End VM's quarantine: the daemon balloons it again from its next tick.

    The health guard quarantines a guest whose CPU storms after ballooning. Release it only once its
    cause is fixed; the lasting remedy is 'autoballoon balloon VM --model none' (next boot).
    """
    if api_token_file is None:
        raise click.UsageError(f"--api-token-file (or ${TOKEN_ENV}) is needed: releasing changes the daemon")
    token = load_token(os.fspath(api_token_file))
    try:
        answer = request(daemon_url, f"vms/{urllib.parse.quote(vm, safe='')}/release", body={}, token=token)
    except DaemonUnreachable as e:
        raise AutoballoonError(f"{e}: no daemon is running there, so no quarantine to release") from None
    now = applied(answer, daemon_url)
    if as_json:
        emit_json({"vm": vm, "released": True, "applied": now})
        return
    done = "released" if now else "release queued (applied at the daemon's next tick)"
    say(f"{vm}: {done}")
