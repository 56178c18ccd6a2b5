"""`tandem export import`: bring your own GGUF, wrapped into a signed, checked bundle."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from export.cli_support import (
    FULL_EVAL_HELP,
    MAX_KL_HELP,
    MIN_TOP1_HELP,
    SIGNING_KEY_HELP,
    add_gate_rows,
    cli_errors,
    load_evaluation,
    step_progress,
)

IMPORT_EVAL_DATA_HELP = (
    'Held-out text (.txt, or .jsonl with a "text" field) for the quality gate against --reference (default: no gate).'
)
GATE_HELP_IMPORT = (
    "Quality gate: largest perplexity increase over the reference model, in percent (default: per type as for "
    "`tandem export gguf`; other 8-bit types 1, other quantized types 10)."
)


def import_gguf(
    model: Path = typer.Argument(..., help="The GGUF file to import (one file; merge split GGUFs first)."),
    out: Path = typer.Argument(..., help="Bundle folder to create."),
    signing_key: str = typer.Option(..., envvar="TANDEM_SIGNING_KEY", help=SIGNING_KEY_HELP),
    tokenizer: Path = typer.Option(
        None,
        help="Hugging Face tokenizer folder to ship and take the chat template from, checked against the "
        "GGUF's vocabulary (default: the GGUF's own vocabulary and template).",
    ),
    reference: Path = typer.Option(
        None, help="Hugging Face model folder the GGUF was made from, for the quality gate (with --eval-data)."
    ),
    eval_data: Path = typer.Option(None, help=IMPORT_EVAL_DATA_HELP),
    max_increase_pct: float = typer.Option(None, help=GATE_HELP_IMPORT),
    max_kl: float = typer.Option(None, help=MAX_KL_HELP),
    min_top1: float = typer.Option(None, help=MIN_TOP1_HELP),
    full_eval: bool = typer.Option(False, "--full-eval", help=FULL_EVAL_HELP),
    name: str = typer.Option(None, help="Bundle name (default: the folder name)."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle (atomically)."),
) -> None:
    """Wrap an existing GGUF into a signed bundle: read it, load it with llama.cpp, check tokenizers, gate, sign.

    Everything the manifest holds comes from the GGUF itself; a bundle without --tokenizer runs on llama.cpp's
    tokenizer over the GGUF's own vocabulary.
    """
    with cli_errors():
        from export import __version__
        from export.errors import SpecError
        from export.gguf.import_gguf import STEPS, default_max_increase_pct, import_gguf, read_gguf
        from export.signing_keys import load_private_key
        from export.source import SourceModel

        if eval_data is not None and reference is None:
            raise SpecError(
                "--eval-data needs --reference HF_DIR: the quality gate compares the GGUF's perplexity with the "
                "reference model's on that text"
            )
        if reference is not None and eval_data is None:
            raise SpecError("--reference needs --eval-data: held-out text to score both models on")
        key = load_private_key(signing_key)
        source = read_gguf(model)
        reference_model = SourceModel.open(reference) if reference is not None else None
        if eval_data is not None and max_increase_pct is None:
            max_increase_pct = default_max_increase_pct(source.quantization)
        evaluation = load_evaluation(
            eval_data, max_increase_pct, source.quantization, max_kl=max_kl, min_top1=min_top1, full=full_eval
        )
        with step_progress() as progress:
            task = progress.add_task("reading", total=len(STEPS))

            def on_step(step: str) -> None:
                progress.update(task, completed=STEPS.index(step), description=f"{step}...")

            result = import_gguf(
                source,
                out,
                key,
                tokenizer=tokenizer,
                reference=reference_model,
                evaluation=evaluation,
                name=name,
                overwrite=overwrite,
                tool_version=__version__,
                on_step=on_step,
            )
            progress.update(task, completed=len(STEPS), description="done")

    manifest = result.manifest
    table = Table(title=f"{manifest.name} -> {out}", show_header=False)
    table.add_row("imported", f"{model.name} (sha256 {result.sha256[:16]}…)")
    table.add_row("GGUF name", result.source.general_name or "?")
    table.add_row("architecture", f"{manifest.architecture}, {manifest.parameters:,} parameters")
    table.add_row(
        "quantization", f"{manifest.quantization} ({result.source.tensor_types.bits_per_weight:.2f} bits per weight)"
    )
    table.add_row("context length", f"{manifest.context_length:,} tokens")
    table.add_row("model file", f"{manifest.files[manifest.model_file].size:,} bytes")
    table.add_row(
        "memory estimate",
        f"{manifest.memory.weight_bytes:,} bytes of weights + "
        f"{manifest.memory.kv_bytes_per_token:,} bytes of KV cache per token "
        f"({manifest.memory.bytes_for(manifest.context_length):,} at full context)",
    )
    table.add_row(
        "tokenizer",
        "tokenizer.json (checked against the GGUF's vocabulary)"
        if result.tokenizer == "tokenizer.json"
        else "llama.cpp, the GGUF's own vocabulary",
    )
    table.add_row(
        "chat template",
        {"gguf": "from the GGUF", "tokenizer": f"from {tokenizer}"}.get(
            result.chat_template or "", "none (raw prompts only)"
        ),
    )
    if result.gate:
        add_gate_rows(table, result.gate, "reference")
    else:
        table.add_row("quality gate", "not run (pass --reference and --eval-data)")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("import")(import_gguf)
