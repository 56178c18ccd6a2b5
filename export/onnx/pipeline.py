"""One ONNX artifact, checked end to end: export, check logits, quantize, describe.

    load      the source model (float32) and tokenizer; the reference logits on CHECK_PROMPTS
    export    optimum-onnx: FP32 decoder with KV cache, in a scratch folder
    check     the FP32 conversion's logits vs the source model's (NumericalMismatchError past ``check_atol``)
    quantize  INT8 or INT4 (weight-only MatMulNBits blocks); FP32 is written as checked
    measure   weight bytes, tensor types, the graph's inputs/outputs; the artifact's own logits difference

``write_onnx`` fills a folder the caller owns (the bundle assembler's staging folder);
``export_onnx`` makes a standalone artifact folder (with the tokenizer), atomically.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.atomic import scratch_folder, staged_folder
from export.errors import SpecError, UnsupportedArchitectureError
from export.onnx import graph
from export.onnx.options import (
    LOGITS_ATOL,
    NBITS_METHOD,
    Int4Options,
    Int8Options,
    Quantization,
    check_quantization,
)
from export.quality import CHECK_PROMPTS, check_logits
from export.source import SourceModel

STEPS = ("load", "export", "check", "quantize", "measure")
"""The steps reported to ``on_step``, in order."""
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"

StepCallback = Callable[[str], None]


def _no_step(_: str) -> None:
    pass


@dataclass(frozen=True)
class LogitsCheck:
    """The numerical check: logits on CHECK_PROMPTS vs the transformers model in float32."""

    prompts: int
    atol: float
    conversion_max_diff: float
    """FP32 conversion vs source: checked against ``atol``."""
    artifact_max_diff: float
    """This artifact vs source: the same number for fp32; for quantized artifacts a report, not a check
    (their quality is judged by perplexity, ``QualityGate``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": "transformers, float32",
            "checked": "fp32 ONNX conversion",
            "prompts": self.prompts,
            "atol": self.atol,
            "max_abs_logit_diff": self.conversion_max_diff,
            "artifact_max_abs_logit_diff": self.artifact_max_diff,
        }


@dataclass(frozen=True)
class OnnxArtifact:
    """What the bundle assembler needs from an ONNX export (all names relative to ``path``)."""

    path: Path
    quantization: str
    model_file: str
    """The .onnx file the runtime opens."""
    files: tuple[str, ...]
    """Every file written, model_file first."""
    weight_bytes: int
    """Bytes of the graph's initializers on disk (the memory estimate's weight term)."""
    f16_bytes: int
    """Bytes of an F16 copy of the source weights: 2 x parameters (tied weights once)."""
    tensor_types: dict[str, str]
    """Initializer name -> storage type and role, e.g. "uint8 (MatMulNBits q4 block 32)"."""
    io: dict[str, Any]
    """Input/output names, types, shapes and the KV-cache layout (JSON-serialisable)."""
    check: LogitsCheck
    int4: Int4Options | None
    int8: Int8Options | None
    tied_embeddings: bool
    """The source ties its LM head to the embedding; the artifact stores the table once."""
    opsets: dict[str, int]

    @property
    def size_ratio_vs_f16(self) -> float:
        return self.weight_bytes / self.f16_bytes

    @property
    def kv_bytes_per_element(self) -> int:
        return np.dtype(self.io["kv_cache"]["dtype"]).itemsize

    def manifest_extra(self) -> dict[str, Any]:
        """For ``Manifest.extra``: what a runtime needs to drive the graph, and how it was quantized."""
        quantization: dict[str, Any] = {"type": self.quantization}
        if self.int8 is not None:
            quantization |= self.int8.as_dict()
        elif self.int4 is not None:
            quantization |= {"method": NBITS_METHOD, **self.int4.as_dict()}
        return {"onnx": {"io": self.io, "opsets": self.opsets, "quantization": quantization}}

    def evaluation(self) -> dict[str, Any]:
        """For ``Manifest.evaluation``: the numerical check and the size."""
        return {
            "numerical_check": self.check.as_dict(),
            "weight_bytes": self.weight_bytes,
            "size_ratio_vs_f16": self.size_ratio_vs_f16,
        }


def _int4_options(quantization: str, int4: Int4Options | None) -> Int4Options | None:
    check_quantization(quantization)
    if quantization == "int4":
        return int4 or Int4Options()
    if int4 is not None:
        raise SpecError(
            f"INT4 options (--block-size, --int4-algorithm, --zero-points, --head-bits, ...) apply to "
            f"--quantization int4, not {quantization}"
        )
    return None


def check_onnx_architecture(source: SourceModel) -> None:
    """Refuse a model family the ONNX path has not been verified on (optimum-onnx export, KV-cache graph I/O,
    edge runtime decode: tests/export/onnx/test_architectures.py), naming the ones it has."""
    from edge_runtime.backends.gguf import ARCHITECTURES as GGUF
    from edge_runtime.backends.onnx import ARCHITECTURES

    if source.arch not in ARCHITECTURES:
        hint = " (GGUF takes it: tandem export gguf)" if source.arch in GGUF else ""
        raise UnsupportedArchitectureError(
            f"architecture {source.arch!r} of {source.path} is not supported for ONNX; supported: "
            f"{', '.join(sorted(ARCHITECTURES))}{hint}"
        )


def _check_atol(atol: float) -> None:
    if not atol >= 0:
        raise SpecError(f"check_atol={atol} must be >= 0")


def write_onnx(
    source: SourceModel,
    folder: str | os.PathLike[str],
    quantization: Quantization = "fp32",
    *,
    int4: Int4Options | None = None,
    check_atol: float = LOGITS_ATOL,
    on_step: StepCallback = _no_step,
) -> OnnxArtifact:
    """Write the ONNX model of ``source`` (model.onnx [+ model.onnx_data], config.json) into the existing
    ``folder``, e.g. a bundle's staging folder. Raises SpecError for bad options, ConversionError when a
    conversion step fails and NumericalMismatchError when the FP32 conversion's logits diverge."""
    int4 = _int4_options(quantization, int4)
    int8 = Int8Options() if quantization == "int8" else None
    _check_atol(check_atol)
    check_onnx_architecture(source)
    folder = Path(folder)
    if not folder.is_dir():
        raise SpecError(f"{folder} is not a folder; create it first (or use export_onnx)")

    on_step("load")
    from export.onnx.runner import OnnxRunner
    from export.quality import hf_logits

    tokenizer = source.load_tokenizer()
    # One model is both the reference and what optimum traces: for soft-capped configs (Gemma 2) that is the
    # eager attention SourceModel loads, so the graph keeps the attention soft-cap the check compares against.
    model = source.load_model()
    prompts = [tokenizer.encode(prompt) for prompt in CHECK_PROMPTS]
    reference = {tuple(ids): hf_logits(model, ids) for ids in prompts}

    def reference_logits(ids: list[int]) -> np.ndarray:
        return reference[tuple(ids)]

    with scratch_folder(folder, ".onnx-scratch-") as scratch:
        on_step("export")
        from export.onnx.convert import export_fp32, name_weights

        raw_file = export_fp32(model, scratch / "export")
        del model
        fp32 = graph.load(raw_file)
        name_weights(fp32)
        head = graph.find_head(fp32)
        tied = bool(head and head.tied)

        on_step("check")
        model_file = folder / MODEL_FILE
        if quantization == "fp32":
            if head and head.tied:
                graph.share_fp32_lm_head(fp32, head)
            files = graph.save(fp32, model_file)
            checked = model_file
        else:
            checked = scratch / MODEL_FILE
            graph.save(fp32, checked)
        conversion_diff = check_logits(
            "fp32 ONNX conversion", prompts, reference_logits, OnnxRunner(checked).logits, check_atol
        )

        on_step("quantize")
        if quantization == "int8":
            from export.onnx.quantize import quantize_int8_model

            written = quantize_int8_model(fp32, int8)
            files = graph.save(written, model_file)
        elif quantization == "int4":
            from export.onnx.quantize import quantize_int4

            written = quantize_int4(fp32, int4)
            files = graph.save(written, model_file)
        else:
            written = fp32
        shutil.copyfile(raw_file.parent / CONFIG_FILE, folder / CONFIG_FILE)

        on_step("measure")
        from export.onnx.describe import tensor_types
        from export.onnx.signature import Signature

        signature = Signature.from_model(written)
        signature.validate()
        artifact_diff = conversion_diff
        if quantization != "fp32":
            runner = OnnxRunner(model_file)
            artifact_diff = max(float(np.abs(runner.logits(ids) - reference[tuple(ids)]).max()) for ids in prompts)
        artifact = OnnxArtifact(
            path=folder,
            quantization=quantization,
            model_file=MODEL_FILE,
            files=(*files, CONFIG_FILE),
            weight_bytes=graph.weight_bytes(written),
            f16_bytes=2 * source.parameter_count(),
            tensor_types=tensor_types(written),
            io=signature.as_dict(),
            check=LogitsCheck(len(prompts), check_atol, conversion_diff, artifact_diff),
            int4=int4,
            int8=int8,
            tied_embeddings=tied,
            opsets={opset.domain or "ai.onnx": int(opset.version) for opset in written.opset_import},
        )
    return artifact


def export_onnx(
    source: SourceModel,
    out: str | os.PathLike[str],
    quantization: Quantization = "fp32",
    *,
    int4: Int4Options | None = None,
    overwrite: bool = False,
    check_atol: float = LOGITS_ATOL,
    on_step: StepCallback = _no_step,
) -> OnnxArtifact:
    """Export ``source`` into a new artifact folder ``out``: the ONNX model, config.json and the tokenizer
    files. The folder appears whole or not at all (OutputExistsError if it exists, unless ``overwrite``)."""
    _int4_options(quantization, int4)
    _check_atol(check_atol)
    from export.bundle_writer import copy_tokenizer_files

    with staged_folder(out, overwrite=overwrite) as stage:
        artifact = write_onnx(
            source, stage, quantization, int4=int4, check_atol=check_atol, on_step=on_step
        )
        copied = copy_tokenizer_files(source.path, stage)
    files = (*artifact.files, *(name for name in copied if name not in artifact.files))
    return dataclasses.replace(artifact, path=Path(out), files=files)
