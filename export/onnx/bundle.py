"""One ONNX bundle, checked end to end: export and check (``write_onnx``), gate the perplexity, sign.

The artifact is written straight into the bundle's staging folder; it becomes the bundle only when the
numerical check, the quality gate and the signature all succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle import Manifest, MemoryEstimate
from export.atomic import staged_folder
from export.bundle_writer import copy_tokenizer_files, seal_bundle
from export.errors import SpecError
from export.onnx.options import Int4Options, check_quantization
from export.onnx.pipeline import STEPS as ARTIFACT_STEPS
from export.onnx.pipeline import OnnxArtifact, write_onnx
from export.quality import Evaluation, GateResult, hf_window_logits
from export.source import SourceModel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

STEPS = (*ARTIFACT_STEPS, "evaluate", "seal")


@dataclass(frozen=True)
class OnnxBundle:
    path: Path
    manifest: Manifest
    artifact: OnnxArtifact
    gate: GateResult | None


NOMINAL_BYTES = {"fp32": 4.0, "int8": 1.0, "int4": 0.6}
"""Bytes per weight of each type (scales included): the disk-space estimate of a model file."""


def disk_bytes(source: SourceModel, quantization: str) -> int:
    """Disk space an ONNX export of ``source`` takes at its peak: optimum's FP32 graph and the checked FP32
    copy in scratch (for fp32: the bundle's own), the quantized model, the tokenizer files."""
    weights = source.parameter_count()
    extra = NOMINAL_BYTES[quantization] if quantization != "fp32" else 0.0
    return int(weights * (2 * NOMINAL_BYTES["fp32"] + extra)) + source.tokenizer_bytes()


def build_onnx_bundle(
    source: SourceModel,
    out: Path,
    quantization: str,
    signing_key: Ed25519PrivateKey,
    *,
    evaluation: Evaluation | None,
    int4: Int4Options | None = None,
    name: str | None = None,
    overwrite: bool = False,
    tool_version: str = "",
    on_step: Callable[[str], None] = lambda step: None,
) -> OnnxBundle:
    """Build a signed ONNX bundle of ``source`` at ``out``. Quantized types require ``evaluation``."""
    check_quantization(quantization)
    if quantization != "fp32" and evaluation is None:
        raise SpecError(f"{quantization} needs held-out evaluation text for its quality gate (--eval-data)")
    with staged_folder(out, overwrite=overwrite, needed_bytes=disk_bytes(source, quantization),
                       what=f"the {quantization} ONNX bundle") as stage:
        artifact = write_onnx(source, stage, quantization, int4=int4, on_step=on_step)

        on_step("evaluate")
        tokenizer = source.load_tokenizer()
        gate = None
        if evaluation is not None:
            from export.onnx.runner import OnnxRunner

            windows = evaluation.windows(tokenizer, source.context_length)
            reference = hf_window_logits(source.load_model())
            gate = evaluation.check(
                f"{quantization} ONNX", windows, reference, OnnxRunner(stage / artifact.model_file).logits
            )

        on_step("seal")
        copy_tokenizer_files(source.path, stage)
        draft = Manifest(
            name=name or out.name,
            format="onnx",
            quantization=quantization,
            architecture=source.arch,
            parameters=source.parameter_count(),
            context_length=source.context_length,
            model_file=artifact.model_file,
            memory=MemoryEstimate(artifact.weight_bytes, source.kv_bytes_per_token(artifact.kv_bytes_per_element)),
            files={},
            tensor_types=artifact.tensor_types,
            evaluation={**artifact.evaluation(), "quality_gate": gate.as_dict() if gate else None},
            tool_version=tool_version,
            chat_template=tokenizer.chat_template,
            extra=artifact.manifest_extra(),
        )
        manifest = seal_bundle(stage, draft, signing_key)
    return OnnxBundle(out, manifest, artifact, gate)
