"""Shared output helpers for commands: rich tables on screen, ``--json`` for machines.

Why one place: every report command offers the same two views of the same data; printing lives in
the CLI layer only (the library returns data and never prints).
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

import click

from .._io import dumps_json


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (nothing else is printed on stdout in --json mode)."""
    click.echo(dumps_json(obj))


def console(stderr: bool = False):
    """A rich console (imported lazily: rich costs ~50 ms at import)."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False, width=None if sys.stdout.isatty() else 140)


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, stderr: bool = False, justify: Sequence[str] | None = None) -> None:
    """Print a table with rich. ``justify`` is one of left/right/center per column (numbers right)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify=(justify[i] if justify else "left"), overflow="fold")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console(stderr).print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def say(message: str) -> None:
    """A human progress/info line on stderr (keeps stdout clean for --json)."""
    click.echo(message, err=True)
