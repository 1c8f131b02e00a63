"""Printing for the CLI: rich tables for people, JSON (bytes, stable names) for scripts."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

#: Width for tables written to a pipe or file, where rich would otherwise squeeze them into 80 columns.
PIPE_WIDTH = 200


def console() -> Console:
    c = Console(soft_wrap=False)
    if not c.is_terminal:
        c = Console(soft_wrap=False, width=PIPE_WIDTH)
    return c


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def table(
    title: str | None, columns: list[str], rows: list[list[str]], *, right: set[int] | None = None
) -> None:
    t = Table(title=title, show_edge=False, header_style="bold")
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if right and i in right else "left", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    console().print(t)


def pairs(title: str, items: list[tuple[str, str]]) -> None:
    """A two-column "key: value" block, like ``virsh dominfo``."""
    t = Table(title=title, show_header=False, show_edge=False, box=None, title_justify="left")
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value")
    for k, v in items:
        t.add_row(k, v)
    console().print(t)
