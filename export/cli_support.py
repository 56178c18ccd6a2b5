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
    from rich.table import Table

    from export.quality import Evaluation, GateResult

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


class _StepProgress(Progress):
    """Rich's progress bar on a terminal; elsewhere (CI logs, pipes) one line per new step description, since
    a redrawn bar only shows up there when it ends."""

    def update(self, task_id, *, description: str | None = None, **changes) -> None:  # type: ignore[override]
        if description is not None and not self.console.is_terminal:
            task = self._tasks[task_id]
            if description != task.description:
                self.console.print(f"[{task.elapsed or 0.0:6.1f} s] {description}", highlight=False)
        super().update(task_id, description=description, **changes)


def step_progress() -> Progress:
    """A progress display for work made of named steps or counted units (use as a context manager)."""
    return _StepProgress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    )


SIGNING_KEY_HELP = "Ed25519 private key: a PEM file or PEM text. Env: TANDEM_SIGNING_KEY."
EVAL_DATA_HELP = (
    'Held-out text (.txt, or .jsonl with a "text" field) for the quality gate; required for quantized types.'
)
GATE_HELP = "Quality gate: largest perplexity increase over the source model, in percent [default: per type]."


MAX_KL_HELP = "Quality gate: largest mean KL divergence from the source model, in nats [default: not gated]."
MIN_TOP1_HELP = "Quality gate: smallest top-1 token agreement with the source model, 0-1 [default: not gated]."
FULL_EVAL_HELP = (
    "Score every window of the evaluation text, not the first 16 (4,096 tokens): slower, for a final figure."
)


def load_evaluation(
    eval_data: Path | None, max_increase_pct: float | None, quantization: str, *,
    max_kl: float | None = None, min_top1: float | None = None, full: bool = False,
) -> Evaluation | None:
    """The quality gate's held-out text and bounds from the command's options (None without data)."""
    from export.distill.data import read_documents
    from export.errors import SpecError
    from export.quality import Evaluation, QualityGate

    if eval_data is None:
        if max_increase_pct is not None or max_kl is not None or min_top1 is not None or full:
            raise SpecError("the quality-gate options need held-out text: add --eval-data FILE")
        return None
    if max_increase_pct is not None:
        gate = QualityGate(max_increase_pct, max_kl, min_top1)
    else:
        gate = QualityGate.default_for(quantization, max_kl=max_kl, min_top1=min_top1)
    evaluation = Evaluation("\n".join(read_documents(eval_data)), gate)
    return Evaluation(evaluation.text, gate, evaluation.window, None) if full else evaluation


def add_gate_rows(table: Table, gate: GateResult, source: str = "source") -> None:
    """The quality report's rows: perplexity change, KL divergence and top-1 agreement with the source (or
    reference) model."""
    table.add_row(
        f"perplexity ({source} -> bundle)",
        f"{gate.source_perplexity:.4g} -> {gate.perplexity:.4g} "
        f"({gate.delta_pct:+.2f} %, gate {gate.max_increase_pct:g} %)",
    )
    if gate.kl_divergence is not None:
        bound = f", gate {gate.max_kl:g}" if gate.max_kl is not None else ""
        table.add_row(f"KL divergence from {source}", f"{gate.kl_divergence:.4f} nats (mean{bound})")
    if gate.top1_agreement is not None:
        bound = f", gate {100 * gate.min_top1:g} %" if gate.min_top1 is not None else ""
        table.add_row(f"top-1 agreement with {source}", f"{100 * gate.top1_agreement:.1f} %{bound}")
    table.add_row("evaluation", f"{gate.tokens:,} tokens" + (f" in {gate.windows} windows" if gate.windows else ""))
