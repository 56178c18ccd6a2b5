"""Quantize an FP32 decoder with ONNX Runtime's own quantizers.

- INT8: dynamic quantization (``quantize_dynamic``): int8 MatMul weights in 7 bits (``INT8_REDUCE_RANGE``: the
  same results on every x86 CPU), per output channel, with the activations quantized on the fly; the embedding
  table int8 per tensor, dequantized after the Gather.
- INT4: block-wise weight-only quantization (``MatMulNBitsQuantizer``): every MatMul with a constant
  weight, the LM head included, becomes ``MatMulNBits`` and the token-embedding Gather becomes
  ``GatherBlockQuantized``. A tied embedding is stored once, in the LM head's blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from export.errors import ConversionError
from export.onnx import graph
from export.onnx.options import INT8_PER_CHANNEL, INT8_REDUCE_RANGE, Int4Options
from export.onnx.quiet import no_basic_config, quiet_libraries

if TYPE_CHECKING:
    import onnx


def quantize_int8(fp32_file: Path, out_file: Path) -> list[str]:
    """Dynamic INT8 of ``fp32_file`` into ``out_file``; return the file names written."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = graph.folder_bytes(fp32_file.parent, graph.model_files(fp32_file.parent, fp32_file.name)) > (
        graph.EXTERNAL_DATA_THRESHOLD
    )
    try:
        with quiet_libraries():
            quantize_dynamic(
                fp32_file,
                out_file,
                op_types_to_quantize=["MatMul", "Gather"],
                per_channel=INT8_PER_CHANNEL,
                reduce_range=INT8_REDUCE_RANGE,
                weight_type=QuantType.QInt8,
                use_external_data_format=external,
                extra_options={"MatMulConstBOnly": True},
            )
    except OSError:
        raise
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime's INT8 quantizer failed on {fp32_file.name}: {exc}") from exc
    return graph.model_files(out_file.parent, out_file.name)


def _nbits_quantizer() -> type:
    try:
        with no_basic_config():
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        raise ConversionError(
            f"INT4 quantization needs ONNX Runtime's MatMulNBits quantizer, which failed to import ({exc}); "
            "install the export extra: pip install 'tandem-inference[export]'"
        ) from exc
    return MatMulNBitsQuantizer


def quantize_int4(model: onnx.ModelProto, options: Int4Options) -> onnx.ModelProto:
    """Block-wise INT4 of an FP32 decoder (in memory); returns the quantized model."""
    quantizer_class = _nbits_quantizer()
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"  # the quantizer selects nodes by name
    head = graph.find_head(model)
    share = (
        head is not None
        and head.tied
        and options.quantize_embeddings
        and graph.initializer(model, head.embedding).dims[1] % options.block_size == 0
    )
    # Only the token embedding is a Gather worth quantizing; others (if any) keep their data.
    excluded = [
        node.name for node in model.graph.node
        if node.op_type == "Gather" and (head is None or node.name != head.embedding_node or share)
    ]
    # Gather in the list also lifts the opset to 21 (for the int4 type); only then is it needed.
    quantize_gather = options.quantize_embeddings and head is not None and not share
    op_types = ("MatMul", "Gather") if quantize_gather else ("MatMul",)
    try:
        with quiet_libraries():
            quantizer = quantizer_class(
                model,
                bits=4,
                block_size=options.block_size,
                is_symmetric=options.symmetric,
                accuracy_level=options.accuracy_level,
                nodes_to_exclude=excluded,
                op_types_to_quantize=op_types,
                quant_axes=(("MatMul", 0), ("Gather", 1)),
            )
            quantizer.process()
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime's INT4 quantizer failed: {exc}") from exc
    quantized: onnx.ModelProto = quantizer.model.model
    if share:
        graph.share_int4_embedding(quantized, head)
    return quantized
