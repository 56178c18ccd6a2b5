"""`tandem export distill`: the distillation command, added to an app by ``register(app)``.

Importing this module loads typer and rich only; torch and transformers are loaded when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from export.cli_support import cli_errors, console, step_progress
from export.distill.config import DistillConfig, StudentSpec
from export.errors import SpecError

if TYPE_CHECKING:
    from export.distill.trainer import StepStats


def _default(name: str) -> Any:
    return DistillConfig.__dataclass_fields__[name].default


def parse_layers(text: str) -> tuple[int, ...]:
    """``"0,2"`` -> (0, 2); SpecError naming --keep-layers otherwise."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SpecError(
            f"--keep-layers {text!r} must be comma-separated teacher layer indices, e.g. --keep-layers 0,2"
        ) from None


def register(app: typer.Typer) -> None:
    """Add the ``distill`` command to ``app``."""

    @app.command("distill")
    def distill_command(
        teacher: Path = typer.Argument(..., help="Teacher model folder (llama, mistral or qwen2; safetensors)."),
        data: Path = typer.Argument(..., help="Text file (one document per line) or .jsonl with a \"text\" field."),
        out: Path = typer.Argument(..., help="Student folder to create; it must not exist unless --overwrite."),
        keep_layers: str | None = typer.Option(
            None, "--keep-layers", help="Initialise the student from these teacher layers, e.g. 0,2."
        ),
        layers: int | None = typer.Option(None, "--layers", help="Student layers (random init)."),
        hidden_size: int | None = typer.Option(None, "--hidden-size", help="Student hidden size (random init)."),
        intermediate_size: int | None = typer.Option(
            None, "--intermediate-size", help="Student MLP size (random init)."
        ),
        heads: int | None = typer.Option(None, "--heads", help="Student attention heads (random init)."),
        kv_heads: int | None = typer.Option(None, "--kv-heads", help="Student key/value heads (random init)."),
        steps: int | None = typer.Option(None, help="Optimizer steps (default: one epoch)."),
        epochs: int | None = typer.Option(None, help="Passes over the training text, instead of --steps."),
        seq_len: int = typer.Option(_default("seq_len"), help="Tokens per training sequence."),
        batch_size: int = typer.Option(_default("batch_size"), help="Sequences per step."),
        lr: float = typer.Option(_default("lr"), help="Peak learning rate (AdamW)."),
        lr_schedule: str = typer.Option(_default("lr_schedule"), help="cosine or constant."),
        warmup_steps: int = typer.Option(_default("warmup_steps"), help="Linear warmup steps."),
        temperature: float = typer.Option(_default("temperature"), help="Softmax temperature of the KL term."),
        alpha_kl: float = typer.Option(_default("alpha_kl"), help="Weight of the KL term (to the teacher)."),
        alpha_ce: float = typer.Option(_default("alpha_ce"), help="Weight of the cross-entropy on the data."),
        seed: int = typer.Option(_default("seed"), help="Same seed, same student."),
        eval_fraction: float = typer.Option(_default("eval_fraction"), help="Share of the text held out."),
        eval_max_windows: int | None = typer.Option(None, help="Score at most this many held-out windows."),
        text_mode: str = typer.Option(
            _default("text_mode"),
            help="Text files: lines (a document each) or whole. chat: a .jsonl of {\"messages\": [...]}, trained on "
            "each final assistant answer.",
        ),
        checkpoint_every: int = typer.Option(_default("checkpoint_every"), help="Checkpoint every N steps (0: never)."),
        checkpoint_dir: Path | None = typer.Option(None, help="Checkpoint folder (default: OUT_DIR.checkpoints)."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the newest checkpoint."),
        overwrite: bool = typer.Option(False, help="Replace an existing OUT_DIR (atomically)."),
    ) -> None:
        """Distill TEACHER_DIR into a smaller student trained on DATA_FILE, written to OUT_DIR."""
        with cli_errors():
            from export.distill.run import distill

            student = StudentSpec(
                keep_layers=parse_layers(keep_layers) if keep_layers is not None else None,
                num_hidden_layers=layers,
                hidden_size=hidden_size,
                intermediate_size=intermediate_size,
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
            )
            config = DistillConfig(
                teacher=teacher, data=data, out=out, student=student, seq_len=seq_len, batch_size=batch_size,
                steps=steps, epochs=epochs, lr=lr, lr_schedule=lr_schedule, warmup_steps=warmup_steps,
                temperature=temperature, alpha_kl=alpha_kl, alpha_ce=alpha_ce, seed=seed,
                eval_fraction=eval_fraction, eval_max_windows=eval_max_windows, text_mode=text_mode,
                checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, overwrite=overwrite,
            )
            last_step = 0  # for the message after Ctrl-C
            try:
                with step_progress() as progress:
                    task = progress.add_task("starting", total=None)

                    def on_phase(phase: str) -> None:
                        progress.update(task, description=f"{phase}...")

                    def on_step(stats: StepStats) -> None:
                        nonlocal last_step
                        last_step = stats.step
                        progress.update(
                            task,
                            total=stats.total_steps,
                            completed=stats.step,
                            description=(
                                f"step {stats.step}/{stats.total_steps}  loss {stats.loss:.3f} "
                                f"(kl {stats.kl:.3f}, ce {stats.ce:.3f})  {stats.tokens_per_s:,.0f} tok/s"
                            ),
                        )

                    result = distill(config, resume=resume, on_step=on_step, on_phase=on_phase)
                    progress.update(task, description="done")
            except KeyboardInterrupt:
                from export.distill.checkpoints import latest_checkpoint

                checkpoint = latest_checkpoint(config.checkpoint_folder)
                hint = (
                    f"run the same command again to resume from {escape(str(checkpoint))}"
                    if checkpoint is not None else "no checkpoint was written yet"
                )
                console.print(f"[yellow]interrupted[/] after step {last_step}; {hint}", soft_wrap=True)
                raise typer.Exit(130) from None

        table = Table(title="distillation", show_header=True)
        table.add_column("held-out perplexity")
        table.add_column("value", justify="right")
        table.add_row("teacher", f"{result.teacher_perplexity.value:.3f}")
        table.add_row("student (initial)", f"{result.student_initial_perplexity.value:.3f}")
        table.add_row("student (distilled)", f"{result.student_perplexity.value:.3f}")
        table.add_row("tokens scored", f"{result.student_perplexity.tokens:,}")
        resumed = f" (resumed at {result.resumed_from_step})" if result.resumed_from_step is not None else ""
        table.add_row("steps", f"{result.steps:,}{resumed}")
        table.add_row("seconds", f"{result.seconds:.1f}")
        table.add_row("teacher folder", str(teacher))
        table.add_row("student folder", str(result.out))
        Console().print(table)
