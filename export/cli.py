"""`tandem export ...`: the ML engineer's commands."""

from __future__ import annotations

import enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from export import build_cli, bundle_commands, pretrained
from export.calibrate import cli as calibrate_cli
from export.cli_support import cli_errors, step_progress
from export.distill import cli as distill_cli
from export.gguf import cli as gguf_cli
from export.gguf import import_cli
from export.onnx import cli as onnx_cli
from export.tasks import cli as tasks_cli

app = typer.Typer(
    name="export",
    help="Distill, convert, quantize and sign models into on-device bundles.",
    no_args_is_help=True,
)
distill_cli.register(app)
gguf_cli.register(app)
import_cli.register(app)
onnx_cli.register(app)
build_cli.register(app)
bundle_commands.register(app)
calibrate_cli.register(app)
tasks_cli.register(app)
pretrained.register(app)


class Size(enum.StrEnum):
    tiny = "tiny"
    bench = "bench"


@app.command("toy-model")
def toy_model(
    out: Path = typer.Argument(..., help="Folder to create; it must not exist unless --overwrite."),
    arch: str = typer.Option("llama", help="Architecture family: llama or qwen2."),
    size: Size = typer.Option(Size.tiny, help="tiny (builds in about a second) or bench (about 100M parameters)."),
    seed: int = typer.Option(0, help="Same seed, same bytes."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder (atomically)."),
) -> None:
    """Build a deterministic random-initialised model folder, offline, to try the pipeline on."""
    with cli_errors():
        from export.safetensors_info import parameter_count
        from export.toy_models import BUILD_STEPS, ToyModelSpec, build_toy_model

        spec = ToyModelSpec.bench(arch, seed) if size is Size.bench else ToyModelSpec.tiny(arch, seed)
        with step_progress() as progress:
            task = progress.add_task("building", total=len(BUILD_STEPS))

            def on_step(step: str) -> None:
                progress.update(task, completed=BUILD_STEPS.index(step), description=f"{step}...")

            folder = build_toy_model(spec, out, overwrite=overwrite, on_step=on_step)
            progress.update(task, completed=len(BUILD_STEPS), description="done")

        table = Table(title=f"{spec.name} -> {folder}", show_header=False)
        table.add_row("architecture", spec.arch)
        table.add_row("parameters", f"{parameter_count(folder):,}")
        table.add_row("dtype", spec.dtype)
        for path in sorted(folder.iterdir()):
            table.add_row(path.name, f"{path.stat().st_size:,} bytes")
        Console().print(table)
