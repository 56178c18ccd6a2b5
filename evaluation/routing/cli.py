"""`tandem eval routing`: compare the routing policies on the task suite's test split, through the real SDK.

Progress and messages go to stderr; the tables (or, with ``--json``, one JSON object) to stdout. Errors the
user can cause (a bad option, a bundle without router, a missing extra) print one line and exit with 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from evaluation.routing.run import EvalProgress, StartCloud
from export.cli_support import step_progress

PLOT_EXTRA = "bench"
"""The extra that brings matplotlib (the `dev` extra has it too)."""

_console = Console(stderr=True)


class _RichProgress(EvalProgress):
    """One progress line per phase; the previous one is closed when the next starts."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def _close(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[-1]
            total = task.total if task.total is not None else 1
            self._progress.update(self._task, total=total, completed=total)

    def phase(self, name: str, total: int | None) -> None:
        self._close()
        self._task = self._progress.add_task(name, total=total)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def finish(self) -> None:
        self._close()


class _BuildProgress:
    """Shows a task-model build (only when the cache lacks the models) on the current progress line."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._stage = ""

    def stage(self, name: str) -> None:
        self._stage = name
        self._task = self._progress.add_task(f"building task models: {name}", total=None)

    def update(self, done: int, total: int | None, detail: str = "") -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=total,
                                  description=f"building task models: {self._stage} {detail}".rstrip())


@contextmanager
def _user_errors() -> Iterator[None]:
    from edge_runtime.errors import BundleError
    from evaluation.routing.errors import EvaluationError
    from export.errors import ExportError

    try:
        yield
    except (EvaluationError, ExportError, BundleError) as exc:
        _console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "matplotlib":
            raise
        _console.print("[bold red]error:[/] the plot needs matplotlib, which comes with the bench extra: "
                       + escape(f"pip install 'tandem-inference[{PLOT_EXTRA}]'"), soft_wrap=True)
        raise typer.Exit(2) from exc


def _start_cloud(ctx: typer.Context) -> StartCloud:
    start_cloud = getattr(ctx.obj, "start_cloud", None)
    if start_cloud is None:
        raise RuntimeError("tandem eval runs inside the tandem command line, which provides the cloud tier "
                           "(ctx.obj.start_cloud); mount evaluation.cli.app there")
    return start_cloud


def routing(
    ctx: typer.Context,
    size: str = typer.Option("full", help="Task models: full (the measured ones) or smoke (tiny, for tests)."),
    cache_dir: Path = typer.Option(None, help="Task-model cache [default: ~/.cache/tandem/tasks]."),
    per_cell: int = typer.Option(None, help="Test items per (family, level) [default: the size's own, 30 for full]."),
    backend: str = typer.Option("gguf", help="Device bundle: gguf (llama.cpp) or onnx (ONNX Runtime)."),
    plot: Path = typer.Option(None, help="PNG of accuracy vs cloud share [default: benchmarks/results/"
                                         "routing_quality.png in the repository, else in the cache]."),
    seed: int = typer.Option(0, help="Seed of the test items and the random policy."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Compare routing policies (always device / cloud, random, text heuristic, calibrated router, logprob
    cascade, router + cascade, oracle) on the test split through the real SDK: real device bundle, real cloud
    tier (2 CPU replicas behind the gateway). Threshold curves replay the recorded outcomes."""
    with _user_errors():
        from evaluation.routing.evaluate import evaluate_routing
        from evaluation.routing.report import tables
        from evaluation.routing.settings import EvalSettings

        settings = EvalSettings(size=size, cache_dir=cache_dir, per_cell=per_cell, backend=backend, seed=seed)
        with step_progress(_console) as bar:  # Rich's bar on a terminal, a line per step in a log
            progress = _RichProgress(bar)
            report = evaluate_routing(settings, _start_cloud(ctx), plot=plot, progress=progress,
                                      build_progress=_BuildProgress(bar))
            progress.finish()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    out = Console()
    for table in tables(report):
        out.print(table)


def register(eval_app: typer.Typer) -> None:
    eval_app.command("routing")(routing)
