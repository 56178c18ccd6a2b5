"""HF causal LM -> FP32 ONNX decoder with KV cache, through optimum-onnx's exporter.

optimum's ``onnx_export_from_model`` traces the already-loaded float32 model (task
"text-generation-with-past") into one ``model.onnx`` (plus ``model.onnx_data`` past 2 GB) that takes past
key/values as inputs and returns the present ones. Its own validation (random inputs) and post-processing
(tied-weight deduplication, which needs accelerate) are skipped: the numerical check against the source
model on real prompts and ``export.onnx.graph`` do that work here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from export.errors import ConversionError
from export.onnx.quiet import quiet_libraries

if TYPE_CHECKING:
    import onnx
    from transformers import PreTrainedModel

TASK = "text-generation-with-past"


def export_fp32(model: PreTrainedModel, folder: Path) -> Path:
    """Export ``model`` (float32, eval mode) into ``folder``; return the .onnx file."""
    from optimum.exporters.onnx import onnx_export_from_model

    try:
        with quiet_libraries():
            onnx_export_from_model(
                model, folder, task=TASK, do_validation=False, no_post_process=True, device="cpu"
            )
    except OSError:
        raise  # disk full, permissions: export.atomic reports them
    except Exception as exc:
        arch = getattr(model.config, "model_type", "?")
        raise ConversionError(f"optimum's ONNX exporter failed on this {arch} model: {exc}") from exc
    model_file = folder / "model.onnx"
    if not model_file.is_file():
        written = sorted(p.name for p in folder.iterdir())
        raise ConversionError(f"optimum's ONNX exporter wrote no model.onnx (it wrote: {', '.join(written)})")
    return model_file


_ANONYMOUS = re.compile(r"^onnx::\w+$")


def name_weights(model: onnx.ModelProto) -> None:
    """Give the anonymous MatMul weights the tracer leaves (``onnx::MatMul_732``) the name of the layer
    that reads them (``model.layers.0.self_attn.q_proj.weight``), so reports and manifests are readable.
    The ONNX weight is the transpose of the torch one: (in_features, out_features)."""
    taken = {t.name for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    renames: dict[str, str] = {}
    for tensor in model.graph.initializer:
        nodes = readers.get(tensor.name, [])
        if not _ANONYMOUS.match(tensor.name) or len(nodes) != 1 or nodes[0].op_type != "MatMul":
            continue
        layer = nodes[0].name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        new = f"{layer}.weight"
        if layer and new not in taken:
            renames[tensor.name] = new
            taken.add(new)
    for tensor in model.graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in renames:
                node.input[index] = renames[name]
