"""One GGUF bundle, checked end to end: convert, check logits, quantize, gate perplexity, sign.

    convert  HF folder -> F32 (for "f32") or F16 GGUF, in a scratch folder
    check    logits of that conversion vs the source model on CHECK_PROMPTS (NumericalMismatchError)
    quantize llama.cpp's quantizer, when a quantized type is asked for
    evaluate perplexity on held-out text by llama.cpp vs by transformers (QualityGateError)
    seal     tokenizer files beside the model, manifest with hashes, Ed25519 signature

Everything lands in a staging folder that becomes the bundle only when all steps pass.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle import Manifest, MemoryEstimate
from export.atomic import staged_folder
from export.bundle_writer import copy_tokenizer_files, seal_bundle
from export.errors import SpecError
from export.gguf.convert import convert_to_gguf
from export.gguf.quantize import QUANTIZATIONS, TensorTypes, quantize_gguf, read_tensor_types
from export.gguf.runner import GgufScorer
from export.quality import CHECK_PROMPTS, Evaluation, GateResult, check_logits, hf_logits, hf_window_nll
from export.source import SourceModel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

GGUF_QUANTIZATIONS = ("f32", "f16", *QUANTIZATIONS)
STEPS = ("convert", "check", "quantize", "evaluate", "seal")
MODEL_FILE = "model.gguf"
# Numerical check tolerance (atol, rtol of the largest logit), by the precision of the unquantized
# conversion. Measured on the toy models with an F32 KV cache: F32 differs by <= 3e-6 x the largest logit
# (summation order), F16 weights by <= 7e-3 x.
LOGITS_TOLERANCE = {"f32": (1e-4, 1e-4), "f16": (1e-2, 2e-2)}
KV_BYTES_PER_ELEMENT = 2  # llama.cpp keeps the KV cache in F16 by default


@dataclass(frozen=True)
class GgufBundle:
    path: Path
    manifest: Manifest
    tensor_types: TensorTypes
    max_logit_diff: float
    gate: GateResult | None


def build_gguf_bundle(
    source: SourceModel,
    out: Path,
    quantization: str,
    signing_key: Ed25519PrivateKey,
    *,
    evaluation: Evaluation | None,
    name: str | None = None,
    overwrite: bool = False,
    tool_version: str = "",
    on_step: Callable[[str], None] = lambda step: None,
) -> GgufBundle:
    """Build a signed GGUF bundle of ``source`` at ``out``. Quantized types require ``evaluation``."""
    if quantization not in GGUF_QUANTIZATIONS:
        raise SpecError(f"quantization {quantization!r} is not one of {', '.join(GGUF_QUANTIZATIONS)} for GGUF")
    if quantization in QUANTIZATIONS and evaluation is None:
        raise SpecError(f"{quantization} needs held-out evaluation text for its quality gate (--eval-data)")
    outtype = "f32" if quantization == "f32" else "f16"
    tokenizer = source.load_tokenizer()
    reference = source.load_model()
    with (
        staged_folder(out, overwrite=overwrite) as stage,
        tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".scratch", dir=stage.parent) as scratch,
    ):
        on_step("convert")
        base = convert_to_gguf(source, Path(scratch) / f"model-{outtype}.gguf", outtype)

        on_step("check")
        prompts = [tokenizer.encode(prompt) for prompt in CHECK_PROMPTS]
        atol, rtol = LOGITS_TOLERANCE[outtype]
        with GgufScorer(base, n_ctx=max(map(len, prompts)), f32_cache=True) as scorer:
            max_diff = check_logits(
                f"{outtype} GGUF", prompts, lambda ids: hf_logits(reference, ids), scorer.logits, atol, rtol
            )

        on_step("quantize")
        model_file = stage / MODEL_FILE
        if quantization in QUANTIZATIONS:
            types = quantize_gguf(base, model_file, quantization)
        else:
            shutil.move(base, model_file)
            types = read_tensor_types(model_file)

        on_step("evaluate")
        gate = None
        if evaluation is not None:
            windows = evaluation.windows(tokenizer, source.context_length)
            with GgufScorer(model_file, n_ctx=max(map(len, windows))) as scorer:
                gate = evaluation.check(f"{quantization} GGUF", windows, hf_window_nll(reference), scorer.window_nll())

        on_step("seal")
        copy_tokenizer_files(source.path, stage)
        draft = Manifest(
            name=name or out.name,
            format="gguf",
            quantization=quantization,
            architecture=source.arch,
            parameters=source.parameter_count(),
            context_length=source.context_length,
            model_file=MODEL_FILE,
            memory=MemoryEstimate(types.weight_bytes, source.kv_bytes_per_token(KV_BYTES_PER_ELEMENT)),
            files={},
            tensor_types=types.types,
            evaluation={
                "numerical_check": {
                    "reference": "transformers, float32",
                    "checked": f"{outtype} conversion",
                    "prompts": len(prompts),
                    "max_abs_logit_diff": max_diff,
                    "atol": atol,
                    "rtol": rtol,
                },
                "quality_gate": gate.as_dict() if gate else None,
                "bits_per_weight": types.bits_per_weight,
                "substituted_tensors": types.substituted,
            },
            tool_version=tool_version,
            chat_template=tokenizer.chat_template,
        )
        manifest = seal_bundle(stage, draft, signing_key)
    return GgufBundle(out, manifest, types, max_diff, gate)
