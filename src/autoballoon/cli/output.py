"""Printing for the CLI: rich tables for people, JSON (bytes, stable names) for scripts.

Text a VM (or its guest, or a remote host) chose — names above all — is printed only through
:func:`printable`: a VM named with terminal escape sequences must not be able to recolour, hide or
rewrite what the operator reads, nor a name with rich markup (``[bold]``) change the table around it.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from autoballoon.text import printable

__all__ = ["cell", "console", "emit_json", "json_option", "pairs", "printable", "say", "table"]

#: ``--json`` for every command that prints data: one JSON value on stdout, sizes in bytes.
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON (sizes in bytes, stable field names)."
)

#: Width for tables written to a pipe or file, where rich would otherwise squeeze them into 80 columns.
PIPE_WIDTH = 200


def console() -> Console:
    c = Console(soft_wrap=False)
    if not c.is_terminal:
        c = Console(soft_wrap=False, width=PIPE_WIDTH)
    return c


def say(message: str, *, err: bool = False) -> None:
    """One line for a person, with anything that could act on the terminal escaped."""
    click.echo(printable(message), err=err)


def cell(text: str) -> Text:
    """A table cell shown as written: escaped, and never read as rich markup."""
    return Text(printable(text))


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def table(
    title: str | None,
    columns: list[str],
    rows: list[list[str]],
    *,
    right: set[int] | None = None,
    compact: bool = False,
) -> None:
    """A table for people. ``compact``: no rules, two spaces between columns (instead of a rule and a
    space each side), for a listing that must fit an 80-column terminal."""
    t = Table(
        title=title,
        show_edge=False,
        header_style="bold",
        box=None if compact else box.HEAVY_HEAD,
        pad_edge=not compact,
    )
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if right and i in right else "left", no_wrap=True)
    for row in rows:
        t.add_row(*(cell(c) for c in row))
    console().print(t)


def pairs(title: str, items: list[tuple[str, str]]) -> None:
    """A two-column "key: value" block, like ``virsh dominfo``."""
    t = Table(title=cell(title), show_header=False, show_edge=False, box=None, title_justify="left")
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value")
    for k, v in items:
        t.add_row(cell(k), cell(v))
    console().print(t)
