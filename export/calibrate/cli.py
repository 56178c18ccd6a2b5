"""`tandem export calibrate-router BUNDLE --key PRIVATE_KEY`: fit the bundle's difficulty router and re-sign it.

Registered on the export app by ``register(app)``; the edge runtime loads when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from export.calibrate.settings import DEFAULT_CASCADE_TARGET, DEFAULT_HIDDEN, DEFAULT_ITERATIONS
from export.cli_support import SIGNING_KEY_HELP, cli_errors, step_progress


def calibrate_router(
    bundle: Path = typer.Argument(..., help="Signed bundle folder (GGUF or ONNX) to calibrate."),
    key: str = typer.Option(
        ..., "--key", envvar="TANDEM_SIGNING_KEY", help=SIGNING_KEY_HELP + " The key the bundle was signed with."
    ),
    reference: Path = typer.Option(
        None, "--reference",
        help='JSONL of calibration prompts: {"messages": [...], "answer": "..."} per line [default: the task '
        "suite's calibration split].",
    ),
    teacher: Path = typer.Option(
        None, "--teacher", help="Teacher model folder: a device answer is good when it equals the teacher's."
    ),
    per_level: int = typer.Option(30, min=1, help="Suite items per task family and difficulty level."),
    seed: int = typer.Option(0, min=0, help="Suite seed, hold-out split and router initialisation."),
    holdout: float = typer.Option(0.3, help="Share of the prompts held out to measure AUROC and thresholds."),
    hidden: int = typer.Option(DEFAULT_HIDDEN, min=0, help="Hidden units of the router (0: logistic regression)."),
    iterations: int = typer.Option(DEFAULT_ITERATIONS, min=1, help="Gradient steps of the fit."),
    cascade_target: float = typer.Option(
        DEFAULT_CASCADE_TARGET, help="The confidence cascade's cutoff is the one reaching this share of the "
        "all-cloud accuracy with the fewest escalations.",
    ),
) -> None:
    """Run the bundle on calibration prompts (greedy, edge runtime), label its answers, fit the router on text
    features, and store router.json in the bundle, re-signed."""
    with cli_errors():
        from export.calibrate.run import STEPS, CalibrationError, calibrate_bundle, read_reference
        from export.calibrate.settings import FitSettings
        from export.signing_keys import load_private_key
        from export.tasks.suite import generate_split

        if not bundle.is_dir():
            raise CalibrationError(f"no bundle at {bundle}: the folder does not exist")
        private_key = load_private_key(key)
        if teacher is not None and not teacher.is_dir():
            raise CalibrationError(f"no teacher model folder at {teacher}")
        if reference is not None:
            items = read_reference(reference, need_answers=teacher is None)
        else:
            items = generate_split("calibration", per_level, seed=seed)
        settings = FitSettings(hidden=hidden, iterations=iterations, seed=seed)
        with step_progress() as progress:
            task = progress.add_task("starting", total=None)
            current = {"step": ""}

            def on_step(step: str) -> None:
                current["step"] = step
                progress.update(task, description=f"{step} ({STEPS.index(step) + 1}/{len(STEPS)})...",
                                completed=0, total=None)

            def on_item(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total,
                                description=f"{current['step']}: {done}/{total} prompts")

            result = calibrate_bundle(bundle, private_key, items=items, teacher=teacher, settings=settings,
                                      holdout=holdout, seed=seed, on_step=on_step, on_item=on_item,
                                      cascade_target=cascade_target)
            progress.update(task, description="done", completed=1, total=1)

    metrics = result.router.metrics
    out = Console()
    summary = Table(title=f"router of {bundle}", show_header=False)
    summary.add_row("calibration prompts", f"{result.items} ({metrics['held_out_items']} held out)")
    summary.add_row("labels", "equal to the teacher's answer" if metrics["label_source"] == "teacher"
                    else "right per the reference answers")
    summary.add_row("device answers good", f"{100 * result.good_share:.1f} %")
    summary.add_row("held-out AUROC", "n/a (one class only)" if result.auroc is None else f"{result.auroc:.3f}")
    summary.add_row("held-out log loss", f"{metrics['log_loss']:.3f}")
    out.print(summary)
    table = Table("threshold", "cloud share", "expected accuracy", title="threshold table (held out)")
    for point in result.router.thresholds:
        table.add_row(f"{point.threshold:.3f}", f"{100 * point.cloud_share:.0f} %",
                      f"{100 * point.expected_accuracy:.1f} %")
    out.print(table)
    cascade = result.router.cascade
    if cascade is not None:
        out.print(f"confidence cascade: escalate when one of the first {cascade.window_tokens} tokens has a logprob "
                  f"below {cascade.min_logprob:.3f} ({100 * cascade.target:.0f} % of the all-cloud accuracy on the "
                  "calibration prompts)")
    from edge_runtime.bundle import key_id

    out.print(f"router.json written into {bundle}; manifest re-signed by key {key_id(private_key.public_key())}")


def register(app: typer.Typer) -> None:
    app.command("calibrate-router")(calibrate_router)
