"""What every `tandem export` command shares: error reporting and progress display."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn

from edge_runtime.storage import fault_of
from export.errors import ExportError

if TYPE_CHECKING:
    from rich.table import Table

    from export.quality import Evaluation, GateResult

console = Console(stderr=True)
"""Progress and messages go to stderr; results (tables, JSON) to stdout."""


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a message: exit status 2 for a wrong input (ExportError), 1 for a
    machine fault (a full disk, a read-only or forbidden folder: StorageError, or an OSError that is one)."""
    try:
        yield
    except ExportError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        fault = fault_of(exc)
        if fault is None:
            raise
        console.print(f"[bold red]error:[/] {escape(str(fault))}", soft_wrap=True)
        raise typer.Exit(1) from exc


HEARTBEAT_S = 30.0
"""Off a terminal, a step that runs this long without a line prints one with its count and ETA."""
MIN_LINE_S = 5.0
"""Off a terminal, a step's changed description (a loss, a file name) prints at most this often, and always when
it says the step is done: a log gets a line every few seconds, not one per update."""


class _StepProgress(Progress):
    """Rich's progress bar on a terminal; elsewhere (CI logs, pipes) a line per step as it starts, as its
    description changes (at most every ``MIN_LINE_S``) and as it ends, and a heartbeat every ``HEARTBEAT_S`` of a
    long quiet step (its count and ETA when known), since a redrawn bar only shows up there when it ends: a long
    step never looks like a hang."""

    def __init__(self, *columns, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*columns, **options)
        self._said: dict[TaskID, float] = {}

    def _say(self, task_id: TaskID, line: str) -> None:
        task = self._tasks[task_id]
        self._said[task_id] = self.get_time()
        self.console.print(f"[{task.elapsed or 0.0:6.1f} s] {line}", highlight=False, markup=False)

    def add_task(self, description: str, *args, **kwargs) -> TaskID:  # type: ignore[no-untyped-def, override]
        task_id = super().add_task(description, *args, **kwargs)
        if not self.console.is_terminal:
            self._say(task_id, description)
        return task_id

    def update(self, task_id, *, description: str | None = None, **changes) -> None:  # type: ignore[override]
        super_update = super().update
        if self.console.is_terminal:
            super_update(task_id, description=description, **changes)
            return
        task = self._tasks[task_id]
        changed = description is not None and description != task.description
        super_update(task_id, description=description, **changes)
        quiet = self.get_time() - self._said.get(task_id, task.start_time or 0.0)
        if changed and (quiet >= MIN_LINE_S or task.description.endswith("done")):
            self._say(task_id, task.description)
        elif quiet >= HEARTBEAT_S:
            self._say(task_id, f"{task.description}: still running{_count(task)}")


def _count(task: Task) -> str:
    """", 12/40, ETA 1 min 3 s" for a counted task (what is known of it)."""
    if task.total is None:
        return ""
    text = f", {task.completed:g}/{task.total:g}"
    remaining = task.time_remaining
    return text + (f", ETA {_duration(remaining)}" if remaining is not None else "")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds + 0.5), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def step_progress(target: Console | None = None) -> Progress:
    """A progress display for work made of named steps or counted units (use as a context manager), on
    ``target`` (default: stderr)."""
    target = target or console
    # Off a terminal the bar would only be drawn once, at the end, after the step lines that said it all.
    return _StepProgress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=target,
        disable=not target.is_terminal,
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
