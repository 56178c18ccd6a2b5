"""ONNX target of the export tool: an FP32, INT8 or INT4 decoder with KV cache for ONNX Runtime.

    from export.onnx import Int4Options, export_onnx
    from export.source import SourceModel
    artifact = export_onnx(SourceModel.open("my-model/"), "my-model-onnx-int4/", "int4",
                           int4=Int4Options(block_size=32))
    artifact.weight_bytes, artifact.tensor_types, artifact.manifest_extra()

Modules: ``convert`` (optimum-onnx export), ``graph`` (weights, tied embeddings), ``quantize`` (ONNX
Runtime's INT8 / INT4 quantizers), ``describe`` (tensor types), ``signature`` (inputs, outputs, KV
layout), ``runner`` (logits, perplexity, greedy decoding with ONNX Runtime), ``pipeline`` (the steps, in
order), ``cli`` (`tandem export onnx`), ``bench`` (the INT4 size measurement).

Importing this package is cheap: torch, transformers, optimum and onnxruntime load inside the functions.
"""

from export.onnx.options import QUANTIZATIONS, Int4Options
from export.onnx.pipeline import STEPS, LogitsCheck, OnnxArtifact, export_onnx, write_onnx
from export.onnx.runner import OnnxRunner, onnx_perplexity

__all__ = [
    "QUANTIZATIONS",
    "STEPS",
    "Int4Options",
    "LogitsCheck",
    "OnnxArtifact",
    "OnnxRunner",
    "export_onnx",
    "onnx_perplexity",
    "write_onnx",
]
