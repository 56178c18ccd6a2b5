"""`tandem export gguf`: one signed, checked GGUF bundle from a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from export.cli_support import (
    EVAL_DATA_HELP,
    FULL_EVAL_HELP,
    GATE_HELP,
    MAX_KL_HELP,
    MIN_TOP1_HELP,
    SIGNING_KEY_HELP,
    add_gate_rows,
    cli_errors,
    console,
    load_evaluation,
    step_progress,
)


def gguf(
    model: Path = typer.Argument(..., help="Hugging Face model folder (config.json, safetensors, tokenizer)."),
    out: Path = typer.Argument(..., help="Bundle folder to create."),
    quantization: str = typer.Option("q4_k_m", "-q", "--quantization", help="f32, f16, q8_0, q4_0 or q4_k_m."),
    signing_key: str = typer.Option(..., envvar="TANDEM_SIGNING_KEY", help=SIGNING_KEY_HELP),
    eval_data: Path = typer.Option(None, help=EVAL_DATA_HELP),
    max_increase_pct: float = typer.Option(None, help=GATE_HELP),
    max_kl: float = typer.Option(None, help=MAX_KL_HELP),
    min_top1: float = typer.Option(None, help=MIN_TOP1_HELP),
    full_eval: bool = typer.Option(False, "--full-eval", help=FULL_EVAL_HELP),
    name: str = typer.Option(None, help="Bundle name [default: the folder name]."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle (atomically)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every tensor stored outside the mix."),
) -> None:
    """Convert with llama.cpp's converter, check the logits, quantize with llama.cpp, gate the quality, sign."""
    with cli_errors():
        from export import __version__
        from export.gguf.architectures import GGUF_ARCHITECTURES
        from export.gguf.pipeline import STEPS, build_gguf_bundle
        from export.signing_keys import load_private_key
        from export.source import SourceModel

        key = load_private_key(signing_key)
        source = SourceModel.open(model, supported=GGUF_ARCHITECTURES)
        evaluation = load_evaluation(
            eval_data, max_increase_pct, quantization, max_kl=max_kl, min_top1=min_top1, full=full_eval
        )
        with step_progress() as progress:
            task = progress.add_task("loading", total=len(STEPS))

            def on_step(step: str) -> None:
                progress.update(task, completed=STEPS.index(step), description=f"{step}...")

            result = build_gguf_bundle(
                source, out, quantization, key, evaluation=evaluation, name=name, overwrite=overwrite,
                tool_version=__version__, on_step=on_step,
            )
            progress.update(task, completed=len(STEPS), description="done")

    summary = result.tensor_types.substitution_summary(quantization)
    if summary:
        hint = "" if verbose else " (--verbose lists them)"
        console.print(f"[yellow]note:[/] {escape(summary)}{hint}", soft_wrap=True)
        if verbose:
            for tensor, stored in sorted(result.tensor_types.substituted.items()):
                width = result.tensor_types.row_widths.get(tensor)
                console.print(f"  {escape(tensor)}: {stored} (rows of {width})", highlight=False)
    table = Table(title=f"{result.manifest.name} -> {out}", show_header=False)
    table.add_row("model file", f"{result.manifest.files[result.manifest.model_file].size:,} bytes")
    table.add_row("bits per weight", f"{result.tensor_types.bits_per_weight:.2f}")
    table.add_row("logits max |diff| vs source", f"{result.max_logit_diff:.3g}")
    if result.gate:
        add_gate_rows(table, result.gate)
    table.add_row("time", " ".join(f"{step} {seconds:.1f} s" for step, seconds in result.seconds.items()))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(gguf)
