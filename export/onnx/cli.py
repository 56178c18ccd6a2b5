"""`tandem export onnx MODEL_DIR OUT_DIR`: one signed, checked ONNX Runtime bundle.

Registered on the export app by ``register(app)``; everything heavy is imported when the command runs.
"""

from __future__ import annotations

import enum
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
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
    load_evaluation,
    step_progress,
)


class QuantizationChoice(enum.StrEnum):
    fp32 = "fp32"
    int8 = "int8"
    int4 = "int4"


def _size(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:.2f} MiB)"


def onnx_command(
    model_dir: Path = typer.Argument(..., help="Hugging Face model folder: config.json, safetensors, tokenizer."),
    out_dir: Path = typer.Argument(..., help="Bundle folder to create; it must not exist unless --overwrite."),
    quantization: QuantizationChoice = typer.Option(
        QuantizationChoice.fp32, "--quantization", "-q",
        help="fp32 (checked against the source), int8 or int4 (weight-only MatMulNBits blocks).",
    ),
    block_size: int | None = typer.Option(
        None, help="INT4: weights per quantization block, a power of two >= 16 (default 32)."
    ),
    symmetric: bool | None = typer.Option(
        None, "--symmetric/--asymmetric", help="INT4: symmetric blocks (no zero points) or asymmetric (the default)."
    ),
    accuracy_level: int | None = typer.Option(
        None, help="INT4: MatMulNBits accuracy_level 0-4 (0: unset, 4: int8 activations, fast on CPU) [default: 4]."
    ),
    int4_algorithm: str | None = typer.Option(
        None, help="INT4: how the layers' 4-bit blocks are chosen: rtn, k_quant or hqq [default: rtn]."
    ),
    zero_points: str | None = typer.Option(
        None, help="INT4, rtn: offset (integer zero point + per-block offset), float or integer [default: offset]."
    ),
    scale_type: str | None = typer.Option(
        None, help="INT4: type of the block scales: float16 or float32 [default: float16]."
    ),
    head_bits: int | None = typer.Option(
        None, help="INT4: bits of the LM head and the tied embedding it shares: 4 or 8 [default: 8]."
    ),
    head_block_size: int | None = typer.Option(
        None, help="INT4: block size of the LM head, a power of two >= 16 [default: 64 at 8 bits, else --block-size]."
    ),
    signing_key: str = typer.Option(..., envvar="TANDEM_SIGNING_KEY", help=SIGNING_KEY_HELP),
    eval_data: Path = typer.Option(None, help=EVAL_DATA_HELP),
    max_increase_pct: float = typer.Option(None, help=GATE_HELP),
    max_kl: float = typer.Option(None, help=MAX_KL_HELP),
    min_top1: float = typer.Option(None, help=MIN_TOP1_HELP),
    full_eval: bool = typer.Option(False, "--full-eval", help=FULL_EVAL_HELP),
    name: str = typer.Option(None, help="Bundle name [default: the folder name]."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder (atomically)."),
) -> None:
    """Export to ONNX with KV cache (optimum-onnx), check the logits, quantize with ONNX Runtime, gate, sign."""
    with cli_errors():
        from export import __version__
        from export.errors import SpecError
        from export.onnx.bundle import STEPS, build_onnx_bundle
        from export.onnx.options import Int4Options
        from export.signing_keys import load_private_key
        from export.source import SourceModel

        given = {
            "--block-size": ("block_size", block_size),
            "--symmetric/--asymmetric": ("symmetric", symmetric),
            "--accuracy-level": ("accuracy_level", accuracy_level),
            "--int4-algorithm": ("algorithm", int4_algorithm),
            "--zero-points": ("zero_points", zero_points),
            "--scale-type": ("scale_type", scale_type),
            "--head-bits": ("head_bits", head_bits),
            "--head-block-size": ("head_block_size", head_block_size),
        }
        int4 = None
        if quantization is QuantizationChoice.int4:
            int4 = Int4Options(**{field: value for field, value in given.values() if value is not None})
        elif any(value is not None for _, value in given.values()):
            options = ", ".join(name for name, (_, value) in given.items() if value is not None)
            raise SpecError(f"{options}: INT4 options, they need --quantization int4 (not {quantization.value})")

        key = load_private_key(signing_key)
        source = SourceModel.open(model_dir)
        evaluation = load_evaluation(
            eval_data, max_increase_pct, quantization.value, max_kl=max_kl, min_top1=min_top1, full=full_eval
        )
        with step_progress() as progress:
            task = progress.add_task("starting", total=len(STEPS))

            def on_step(step: str) -> None:
                progress.update(task, completed=STEPS.index(step), description=f"{step}...")

            bundle = build_onnx_bundle(
                source, out_dir, quantization.value, key, evaluation=evaluation, int4=int4, name=name,
                overwrite=overwrite, tool_version=__version__, on_step=on_step,
            )
            progress.update(task, completed=len(STEPS), description="done")
        artifact = bundle.artifact

        table = Table(title=f"{quantization.value} ONNX of {source.arch} -> {bundle.path}", show_header=False)
        for file_name in artifact.files:
            table.add_row(file_name, _size((bundle.path / file_name).stat().st_size))
        table.add_row("weights", _size(artifact.weight_bytes))
        table.add_row("size ratio vs F16", f"{artifact.size_ratio_vs_f16:.3f} (F16 copy: {_size(artifact.f16_bytes)})")
        check = artifact.check
        table.add_row(
            "logits max diff", f"{check.conversion_max_diff:.3g} (fp32 conversion, tolerance {check.atol:g})"
        )
        if artifact.quantization != "fp32":
            table.add_row("", f"{check.artifact_max_diff:.3g} ({artifact.quantization} artifact, for information)")
        types = Counter(kind.split(" ", 1)[0] for kind in artifact.tensor_types.values())
        table.add_row("tensor types", ", ".join(f"{kind} x{count}" for kind, count in types.most_common()))
        kv = artifact.io["kv_cache"]
        table.add_row(
            "KV cache", f"{kv['num_layers']} layers x {kv['num_kv_heads']} heads x {kv['head_dim']}, {kv['dtype']}"
        )
        if artifact.int4 is not None:
            o = artifact.int4
            table.add_row("int4", f"{o.algorithm}, block {o.block_size}, zero points {o.zero_points or 'none'}, "
                          f"{o.scale_type} scales, head {o.head_bits}-bit block {o.head_block_size}, "
                          f"accuracy_level {o.accuracy_level}")
        if artifact.int8 is not None:
            o8 = artifact.int8
            table.add_row("int8", f"symmetric, block {o8.block_size}, {o8.scale_type} scales, "
                          f"accuracy_level {o8.accuracy_level}")
        if bundle.gate:
            add_gate_rows(table, bundle.gate)
        if artifact.tied_embeddings:
            table.add_row("tied embeddings", "stored once")
        Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the `onnx` command to ``app`` (the `tandem export` group)."""
    app.command("onnx")(onnx_command)
