"""`tandem export build RECIPE.toml`: the whole pipeline of a recipe, into one output folder.

    OUT/
      student/                      the distilled student (when the recipe distills), a Hugging Face folder
      <name>-gguf-q4_k_m/           one signed bundle per target
      <name>-onnx-int4/
      build_report.json             what was built, sizes, checks and gates

The output folder appears whole or not at all. Distillation checkpoints live beside it
(``OUT.checkpoints``), so an interrupted build resumes its distillation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.atomic import staged_folder
from export.quality import Evaluation, QualityGate
from export.recipe import Recipe, Target
from export.source import SourceModel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_runtime.bundle import Manifest
    from export.distill.trainer import StepStats

REPORT_FILE = "build_report.json"


@dataclass(frozen=True)
class BuildResult:
    path: Path
    bundles: dict[str, Manifest]
    report: dict[str, Any]


class BuildProgress:
    """What a build reports while it runs (the CLI draws it); the default ignores everything."""

    def stage(self, name: str) -> None:
        """A new stage starts: "distill" or a bundle's name."""

    def step(self, name: str) -> None:
        """A step of the current stage (convert, check, quantize, evaluate, seal...)."""

    def distill_step(self, stats: StepStats) -> None:
        """One optimizer step of the distillation."""


def _evaluation(recipe: Recipe, text: str | None, target: Target) -> Evaluation | None:
    if text is None:
        return None
    bound = recipe.gates.get(target.quantization)
    gate = QualityGate(bound) if bound is not None else QualityGate.default_for(target.quantization)
    return Evaluation(text, gate, recipe.window, recipe.max_windows)


def _build_target(
    source: SourceModel, target: Target, out: Path, key: Ed25519PrivateKey, evaluation: Evaluation | None,
    tool_version: str, on_step: Callable[[str], None],
) -> Manifest:
    if target.format == "gguf":
        from export.gguf.pipeline import build_gguf_bundle

        return build_gguf_bundle(
            source, out, target.quantization, key, evaluation=evaluation, tool_version=tool_version, on_step=on_step
        ).manifest
    from export.onnx.bundle import build_onnx_bundle
    from export.onnx.options import Int4Options

    int4 = Int4Options(**target.options) if target.quantization == "int4" else None
    return build_onnx_bundle(
        source, out, target.quantization, key, evaluation=evaluation, int4=int4, tool_version=tool_version,
        on_step=on_step,
    ).manifest


def run_build(
    recipe: Recipe,
    out: Path,
    signing_key: Ed25519PrivateKey,
    *,
    overwrite: bool = False,
    tool_version: str = "",
    progress: BuildProgress | None = None,
) -> BuildResult:
    """Run ``recipe`` into ``out``: distill (optional), then every target as a checked, signed bundle."""
    from export.distill.data import read_documents

    progress = progress or BuildProgress()
    started = time.perf_counter()
    source = SourceModel.open(recipe.source)
    text = "\n".join(read_documents(recipe.evaluation_data)) if recipe.evaluation_data else None
    report: dict[str, Any] = {"recipe": str(recipe.path), "source": str(recipe.source), "bundles": {}}
    bundles: dict[str, Manifest] = {}
    with staged_folder(out, overwrite=overwrite) as stage:
        if recipe.distill is not None:
            from export.distill import DistillConfig, distill

            progress.stage("distill")
            config = DistillConfig(
                teacher=recipe.source, out=stage / "student", checkpoint_dir=out.with_name(out.name + ".checkpoints"),
                **recipe.distill,
            )
            result = distill(config, on_step=progress.distill_step, on_phase=progress.step)
            report["distill"] = result.report
            source = SourceModel.open(stage / "student")
        for target in recipe.targets:
            name = f"{recipe.name}-{target.bundle_name}"
            progress.stage(name)
            manifest = _build_target(
                source, target, stage / name, signing_key, _evaluation(recipe, text, target), tool_version,
                progress.step,
            )
            bundles[name] = manifest
            entry = manifest.files[manifest.model_file]
            report["bundles"][name] = {
                "format": manifest.format,
                "quantization": manifest.quantization,
                "model_bytes": entry.size,
                "weight_bytes": manifest.memory.weight_bytes,
                "evaluation": manifest.evaluation,
            }
        report["seconds"] = time.perf_counter() - started
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return BuildResult(out, bundles, report)
