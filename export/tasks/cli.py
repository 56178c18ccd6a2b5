"""`tandem export tasks build [--size full|small|smoke]`: build (or reuse) the task suite's teacher, student and
bundles (``--smoke`` is short for ``--size smoke``).

Registered on the export app by ``register(app)``; torch and transformers load when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from export.cli_support import cli_errors, step_progress
from export.errors import SpecError
from export.tasks.build import SIZES, STAGES, TaskBuildProgress

SIZE_HELP = (
    "full: every family and level, a ~95 % teacher (about 8 minutes on 2 cores), the default; small: reversal and "
    "sorting up to level 3 with a real difficulty signal, for tests (about a minute); smoke: seconds, learns little."
)

app = typer.Typer(name="tasks", help="The synthetic task suite and its teacher / student models.",
                  no_args_is_help=True)


class RichBuildProgress(TaskBuildProgress):
    """Draws a task-models build on a Rich ``Progress``: one line per stage (also used by `tandem demo`)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._stage = ""

    def _close(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=f"{self._stage}: done", completed=1, total=1)

    def stage(self, name: str) -> None:
        self._close()
        self._stage = name
        self._task = self._progress.add_task(f"{name} ({STAGES.index(name) + 1}/{len(STAGES)})...", total=None)

    def update(self, done: int, total: int | None, detail: str = "") -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=total,
                                  description=f"{self._stage}: {detail}" if detail else self._stage)

    def finish(self) -> None:
        self._close()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def accuracy_tables(report: dict[str, Any]) -> list[Table]:
    """Per-level and per-family accuracy of the teacher and the student bundles (from a build report)."""
    teacher = report["teacher"]["accuracy"]
    students = report["student"]["accuracy"]
    columns = ["teacher", *(f"student {fmt}" for fmt in students)]
    by_level = Table("difficulty", *columns, title=f"accuracy on the test split ({teacher['items']} items, greedy)")
    for level in teacher["levels"]:
        by_level.add_row(level, _pct(teacher["levels"][level]),
                         *(_pct(table["levels"].get(level)) for table in students.values()))
    by_level.add_row("overall", _pct(teacher["overall"]), *(_pct(table["overall"]) for table in students.values()),
                     style="bold")
    by_family = Table("family", *columns, title="accuracy by task family")
    for family, entry in teacher["families"].items():
        by_family.add_row(family, _pct(entry["overall"]),
                          *(_pct(table["families"][family]["overall"]) for table in students.values()))
    return [by_level, by_family]


def resolve_size(size: str | None, smoke: bool) -> str:
    """The size the options ask for: ``--smoke`` is ``--size smoke``; neither is "full"."""
    if smoke and size not in (None, "smoke"):
        raise SpecError(f"--smoke and --size {size} disagree: give one of them")
    resolved = "smoke" if smoke else size or "full"
    if resolved not in SIZES:
        raise SpecError(f"--size {resolved} is not one of {', '.join(SIZES)}")
    return resolved


@app.command("build")
def build(
    size: str | None = typer.Option(None, "--size", help=SIZE_HELP, show_default=False),
    smoke: bool = typer.Option(False, "--smoke", help="Same as --size smoke."),
    cache_dir: Path = typer.Option(None, help="Cache folder (default: ~/.cache/tandem/tasks)."),
) -> None:
    """Build (or reuse) the teacher, the distilled student, its signed GGUF and ONNX bundles and their routers;
    print the accuracy per difficulty level."""
    with cli_errors():
        from export.tasks.build import ensure_task_models

        chosen = resolve_size(size, smoke)
        with step_progress() as progress:
            reporter = RichBuildProgress(progress)
            models = ensure_task_models(cache_dir, size=chosen, progress=reporter)
            reporter.finish()

    out = Console()
    for table in accuracy_tables(models.report):
        out.print(table)
    report = models.report
    summary = Table(title=f"task models ({report['spec']['size']})", show_header=False)
    summary.add_row("teacher", f"{models.teacher} ({report['teacher']['parameters']:,} parameters)")
    summary.add_row("student", f"{models.student} ({report['student']['parameters']:,} parameters)")
    for fmt, path in models.bundles.items():
        auroc = report["routers"][fmt].get("auroc")
        summary.add_row(f"{fmt} bundle", f"{path} (router AUROC {'n/a' if auroc is None else f'{auroc:.3f}'})")
    summary.add_row("public key", str(models.public_key))
    seconds = report["seconds"]
    summary.add_row("build time", ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    out.print(summary)


def register(export_app: typer.Typer) -> None:
    export_app.add_typer(app)
