"""What every `tandem export` command shares: error reporting and progress display."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from export.errors import ExportError

if TYPE_CHECKING:
    from export.quality import Evaluation

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


SIGNING_KEY_HELP = "Ed25519 private key: a PEM file or PEM text. Env: TANDEM_SIGNING_KEY."
EVAL_DATA_HELP = (
    'Held-out text (.txt, or .jsonl with a "text" field) for the quality gate; required for quantized types.'
)
GATE_HELP = "Quality gate: largest perplexity increase over the source model, in percent [default: per type]."


def load_evaluation(eval_data: Path | None, max_increase_pct: float | None, quantization: str) -> Evaluation | None:
    """The quality gate's held-out text and bound from the command's options (None without data)."""
    from export.distill.data import read_documents
    from export.quality import Evaluation, QualityGate

    if eval_data is None:
        return None
    gate = QualityGate(max_increase_pct) if max_increase_pct is not None else QualityGate.default_for(quantization)
    return Evaluation("\n".join(read_documents(eval_data)), gate)
