"""One GGUF bundle, checked end to end: convert, check logits, quantize, gate perplexity, sign.

    convert  HF folder -> F32 (for "f32") or F16 GGUF by llama.cpp's own converter, in a scratch folder
    check    logits of that conversion vs the source model on CHECK_PROMPTS (NumericalMismatchError)
    quantize llama.cpp's quantizer, when a quantized type is asked for
    evaluate perplexity on held-out text by llama.cpp vs by transformers (QualityGateError)
    seal     tokenizer files beside the model, manifest with hashes, Ed25519 signature

Everything lands in a staging folder that becomes the bundle only when all steps pass.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle import Manifest, MemoryEstimate
from export.atomic import scratch_folder, staged_folder
from export.bundle_writer import copy_tokenizer_files, seal_bundle
from export.errors import SpecError
from export.gguf.convert import convert_to_gguf
from export.gguf.quantize import NOMINAL_BITS, QUANTIZATIONS, TensorTypes, quantize_gguf, read_tensor_types
from export.gguf.runner import GgufScorer
from export.quality import CHECK_PROMPTS, Evaluation, GateResult, check_logits, hf_logits, hf_window_logits
from export.source import SourceModel
from export.step_timer import StepTimer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

GGUF_QUANTIZATIONS = ("f32", "f16", *QUANTIZATIONS)
STEPS = ("convert", "check", "quantize", "evaluate", "seal")
MODEL_FILE = "model.gguf"
# Numerical check tolerance (atol, rtol of the largest logit), by the precision of the unquantized
# conversion. Measured on the toy models with an F32 KV cache: F32 differs by <= 3e-6 x the largest logit
# (summation order), F16 weights by <= 7e-3 x.
LOGITS_TOLERANCE = {"f32": (1e-4, 1e-4), "f16": (1e-2, 2e-2)}
# ggml computes GELU from a float16 lookup table, so an F32 conversion of a GELU model (Gemma) differs from
# transformers by more than summation order: <= 7.4e-4 x the largest logit on the toy Gemma 2 / 3.
GELU_F32_TOLERANCE = (1e-3, 2e-3)


def logits_tolerance(outtype: str, config: dict) -> tuple[float, float]:
    """(atol, rtol) of the numerical check of an ``outtype`` conversion of a model with ``config``."""
    activation = str(config.get("hidden_activation") or config.get("hidden_act") or "")
    if outtype == "f32" and activation.startswith("gelu"):
        return GELU_F32_TOLERANCE
    return LOGITS_TOLERANCE[outtype]
KV_BYTES_PER_ELEMENT = 2  # llama.cpp keeps the KV cache in F16 by default


@dataclass(frozen=True)
class GgufBundle:
    path: Path
    manifest: Manifest
    tensor_types: TensorTypes
    max_logit_diff: float
    gate: GateResult | None
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step that ran, in STEPS order."""


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
    timer = StepTimer(on_step)
    on_step = timer.step
    tokenizer = source.load_tokenizer()
    reference = source.load_model()
    # Disk: the unquantized GGUF in scratch, the quantized one beside it, the tokenizer files.
    weights = source.parameter_count()
    needed = int(weights * (NOMINAL_BITS[outtype] + (NOMINAL_BITS[quantization] if quantization in QUANTIZATIONS
                                                     else 0)) / 8) + source.tokenizer_bytes()
    with staged_folder(out, overwrite=overwrite, needed_bytes=needed, what=f"the {quantization} GGUF bundle") as stage:
        with scratch_folder(stage) as scratch:  # the unquantized GGUF: gone before the bundle is sealed
            on_step("convert")
            base = Path(scratch) / f"model-{outtype}.gguf"
            conversion = convert_to_gguf(source, base, outtype)

            on_step("check")
            prompts = [tokenizer.encode(prompt) for prompt in CHECK_PROMPTS]
            atol, rtol = logits_tolerance(outtype, source.config)
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
                gate = evaluation.check(f"{quantization} GGUF", windows, hf_window_logits(reference),
                                        scorer.logits_view)

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
                "conversion": {
                    "converter": conversion.converter,
                    "architecture": conversion.architecture,
                    "gguf_architecture": conversion.gguf_architecture,
                    "pre_tokenizer": conversion.pre_tokenizer,
                    "pre_tokenizer_from": conversion.pre_tokenizer_from,
                },
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
    return GgufBundle(out, manifest, types, max_diff, gate, timer.finish())
