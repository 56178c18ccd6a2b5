"""The whole evaluation in one call: models, test items, real runs, replay, report and plot.

    report = evaluate_routing(EvalSettings(size="smoke", per_cell=2), start_cloud, plot=Path("routing.png"))
    report["policies"]["router"]["accuracy"], report["router_auroc"], report["goals"]
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from evaluation.routing.errors import EvaluationSettingsError
from evaluation.routing.plot import write_plot
from evaluation.routing.report import build_report, policy_curves
from evaluation.routing.run import CLOUD_REPLICAS, EvalProgress, StartCloud, bundle_policies, run_policies
from evaluation.routing.settings import EvalSettings

PLOT_NAME = "routing_quality.png"
REPO_PLOT_FOLDER = Path("benchmarks") / "results"


def default_plot_path(settings: EvalSettings, cwd: Path | None = None) -> Path:
    """benchmarks/results/routing_quality.png when run from the repository's root (it has that folder and a
    pyproject.toml), else routing_quality.png in the task-model cache."""
    cwd = cwd or Path.cwd()
    if (cwd / REPO_PLOT_FOLDER).is_dir() and (cwd / "pyproject.toml").is_file():
        return REPO_PLOT_FOLDER / PLOT_NAME
    return settings.resolved_cache_dir() / PLOT_NAME


def check_plot_path(path: Path) -> None:
    if path.is_dir():
        raise EvaluationSettingsError("--plot", f"{str(path)!r} is a folder; give a file name ending in .png")
    if path.suffix.lower() != ".png":
        raise EvaluationSettingsError("--plot", f"{str(path)!r} must end in .png")


def evaluate_routing(settings: EvalSettings, start_cloud: StartCloud, *, plot: Path | None = None,
                     progress: EvalProgress | None = None, build_progress: Any = None) -> dict[str, Any]:
    """Build (or reuse) the task models, run every policy through the SDK, replay the sweeps, write the plot;
    the report (``evaluation.routing.report``) with ``plot`` and ``seconds`` (wall time) added. ``start_cloud``
    starts the cloud tier (``run.StartCloud``)."""
    from export.tasks import generate_split
    from export.tasks.build import TaskModelsSpec, ensure_task_models

    plot_path = plot or default_plot_path(settings)
    check_plot_path(plot_path)
    started = time.perf_counter()
    progress = progress or EvalProgress()
    progress.phase(f"task models ({settings.size})", None)
    models = ensure_task_models(settings.resolved_cache_dir(), size=settings.size, progress=build_progress)
    per_cell = settings.resolved_per_cell()
    spec = TaskModelsSpec.for_size(settings.size)  # the families and levels the models were trained on
    items = generate_split("test", per_cell, seed=settings.seed, families=spec.families, levels=spec.levels)
    policies = bundle_policies(models, settings.backend)
    runs, outcomes = asyncio.run(run_policies(items, models, settings, start_cloud, progress, policies))
    curves = policy_curves(outcomes, policies)
    meta = {
        "size": settings.size, "backend": settings.backend, "per_cell": per_cell, "seed": settings.seed,
        "device_bundle": str(models.bundles[settings.backend]), "cloud_model": str(models.teacher),
        "cloud": f"{CLOUD_REPLICAS} CPU-engine replicas of the teacher behind the gateway, on loopback",
        "decoding": "greedy (temperature 0)",
    }
    report = build_report(items, runs, outcomes, curves, meta, policies)
    report["plot"] = str(write_plot(report, curves, plot_path))
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
