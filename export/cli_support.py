"""What every `tandem export` command shares: error reporting and progress display."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from export.errors import ExportError

console = Console(stderr=True)
"""Progress and messages go to stderr; results (tables, JSON) to stdout."""


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a one-line message and exit status 2."""
    try:
        yield
    except ExportError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


def step_progress() -> Progress:
    """A progress display for work made of named steps or counted units (use as a context manager)."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    )
