"""`tandem export build RECIPE.toml --out DIR`: the whole pipeline from one recipe file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from export.build import BuildProgress
from export.cli_support import SIGNING_KEY_HELP, cli_errors, step_progress


class _RichBuildProgress(BuildProgress):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._stage = ""

    def stage(self, name: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=f"{self._stage}: done", completed=1, total=1)
        self._stage = name
        self._task = self._progress.add_task(name, total=None)

    def step(self, name: str) -> None:
        self._progress.update(self._task, description=f"{self._stage}: {name}...")

    def distill_step(self, stats) -> None:
        self._progress.update(
            self._task, total=stats.total_steps, completed=stats.step,
            description=f"distill: loss {stats.loss:.3f}, {stats.tokens_per_s:,.0f} tokens/s",
        )

    def finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=f"{self._stage}: done", completed=1, total=1)


def build(
    recipe_file: Path = typer.Argument(..., help="RECIPE.toml (see the README for its fields)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the student, the bundles and the report."),
    signing_key: str = typer.Option(
        None, envvar="TANDEM_SIGNING_KEY", help=SIGNING_KEY_HELP + " Overrides the recipe's [signing]."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder (atomically)."),
    source: Path = typer.Option(None, help="Model folder to use instead of the recipe's [model] source."),
) -> None:
    """Run a recipe: optional distillation, then every target as a checked, signed bundle."""
    with cli_errors():
        from export import __version__
        from export.build import run_build
        from export.errors import RecipeError
        from export.recipe import load_recipe
        from export.signing_keys import load_private_key

        recipe = load_recipe(recipe_file, source=source)
        key_source = signing_key or recipe.signing_key
        if key_source is None:
            raise RecipeError("no signing key: set [signing] key or key_env in the recipe, or pass --signing-key")
        key = load_private_key(key_source)
        with step_progress() as progress:
            reporter = _RichBuildProgress(progress)
            result = run_build(recipe, out, key, overwrite=overwrite, tool_version=__version__, progress=reporter)
            reporter.finish()

    table = Table("bundle", "model bytes", "check max |diff|", "perplexity change", title=f"{recipe.name} -> {out}")
    for name, entry in result.report["bundles"].items():
        gate = entry["evaluation"].get("quality_gate")
        change = f"{gate['delta_pct']:+.2f} % (gate {gate['max_increase_pct']:g} %)" if gate else "-"
        check = entry["evaluation"]["numerical_check"]["max_abs_logit_diff"]
        table.add_row(name, f"{entry['model_bytes']:,}", f"{check:.3g}", change)
    Console().print(table)
    if "distill" in result.report:
        held_out = result.report["distill"]["held_out"]
        Console().print(
            "distilled student, held-out perplexity: "
            + ", ".join(f"{who} {held_out[who]['perplexity']:.4g}" for who in ("teacher", "student_initial", "student"))
        )


def register(app: typer.Typer) -> None:
    app.command()(build)
