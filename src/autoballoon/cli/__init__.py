"""The ``autoballoon`` command: thin, it parses, calls the layers below and prints.

Exit codes (README, "Command-line reference"): 0 success, 1 the operation failed at run time, 2 bad
usage or a refused request (nothing changed).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from autoballoon import __version__
from autoballoon.backends import KNOWN_SCHEMES, Backend, default_uri, open_backend
from autoballoon.cli.output import say
from autoballoon.errors import AutoballoonError


class Context:
    """Opens the backend on first use, so ``--help`` and usage errors never touch a hypervisor."""

    def __init__(self, uri: str, backend: Backend | None = None) -> None:
        self.uri = uri
        self._backend = backend

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.uri)
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--connect",
    "-c",
    "uri",
    metavar="URI",
    default=default_uri,
    show_default="$AUTOBALLOON_URI, else $LIBVIRT_DEFAULT_URI, else qemu:///system",
    help=f"Hypervisor to talk to: {KNOWN_SCHEMES}. A sim:// host lives inside this one process: changes "
    "made by one command are gone when it exits.",
)
@click.version_option(__version__, prog_name="autoballoon")
@click.pass_context
def cli(ctx: click.Context, uri: str) -> None:
    """Automatic, safe virtio-balloon management for KVM/QEMU hosts, and the hand tools around it."""
    if ctx.obj is None:  # tests may hand in a Context with a backend already open
        ctx.obj = Context(uri)
        ctx.call_on_close(ctx.obj.close)


# Each command group lives in its own module and registers itself on ``cli`` when imported.
from autoballoon.cli import (  # noqa: E402,F401
    change,
    completion,
    evaluate,
    fleet,
    inventory,
    release,
    run,
)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: our errors become one line on stderr and the documented exit code."""
    try:
        rv = cli.main(args=argv, prog_name="autoballoon", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AutoballoonError as e:
        say(f"autoballoon: error: {e}", err=True)
        sys.exit(e.exit_code)
    if isinstance(rv, int):
        sys.exit(rv)
    return rv
