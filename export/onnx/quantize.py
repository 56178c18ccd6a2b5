"""Quantize an FP32 decoder with ONNX Runtime's own quantizers.

- INT8: block-wise weight-only quantization (``MatMulNBits`` bits=8, ONNX Runtime's symmetric round to nearest):
  every MatMul with a constant weight, the LM head included; a tied embedding reads the head's blocks through
  ``GatherBlockQuantized`` (stored once), an untied one gets its own 8-bit table. The activations are quantized
  per token and block inside the kernel (``accuracy_level`` 4), not per tensor as dynamic quantization did (the
  measurements are in ``export.onnx.options.Int8Options``). With ``scale_type="float16"`` the scales are
  stored and the ops computed in float16, as for INT4.
- INT4: block-wise weight-only quantization (``MatMulNBits``), in three passes. The LM head becomes an
  ``options.head_bits`` ``MatMulNBits`` (ONNX Runtime's round to nearest, symmetric at 8 bits); a tied embedding
  then reads the head's blocks through ``GatherBlockQuantized`` (stored once), an untied one gets its own 4-bit
  ``GatherBlockQuantized``. Every other MatMul with a constant weight becomes a 4-bit ``MatMulNBits`` chosen by
  ``options.algorithm`` and ``options.zero_points``. Last, with ``scale_type="float16"``, every scale (and float
  zero point) is stored in float16 and the quantized ops compute in float16 between two Casts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.errors import ConversionError
from export.onnx import graph
from export.onnx.options import INT8_BITS, Int4Options, Int8Options
from export.onnx.quiet import no_basic_config, quiet_libraries

if TYPE_CHECKING:
    import onnx

def quantize_int8(fp32_file: Path, out_file: Path, options: Int8Options | None = None) -> list[str]:
    """Block-wise weight-only INT8 of the decoder in ``fp32_file`` into ``out_file``; return the file names
    written."""
    model = quantize_int8_model(graph.load(fp32_file), options or Int8Options())
    return graph.save(model, out_file)


def quantize_int8_model(model: onnx.ModelProto, options: Int8Options) -> onnx.ModelProto:
    """Block-wise weight-only INT8 of an FP32 decoder (in memory); returns the quantized model."""
    nbits = _nbits_module()
    _name_nodes(model)
    head = graph.find_head(model)
    try:
        with quiet_libraries():
            exclude: list[str] = []
            if head is not None and head.tied and options.quantize_embeddings:
                # A tied head in blocks the hidden size divides, so that the embedding can read them.
                block = _dividing_block(graph.initializer(model, head.embedding).dims[1], options.block_size)
                if block:
                    model = _run(nbits, model, options, bits=INT8_BITS, symmetric=True, block_size=block, exclude=[
                        node.name for node in model.graph.node if node.name != head.lm_head_node
                    ])
                    graph.share_int4_embedding(model, head, INT8_BITS)
                    exclude = [f"{head.lm_head_node}_Q{INT8_BITS}"]
            if head is not None and options.quantize_embeddings and not exclude:
                _gather_8bit(model, head, options.block_size)
            # Every (other) MatMul with a constant weight, the LM head included.
            model = _run(nbits, model, options, bits=INT8_BITS, symmetric=True, exclude=exclude)
            if options.scale_type == "float16":
                _half_precision_scales(model)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime's MatMulNBits quantizer failed at 8 bits: {exc}") from exc
    return model


def _dividing_block(hidden: int, block_size: int) -> int | None:
    """The largest power of two in [16, block_size] that divides ``hidden``, if any."""
    while block_size >= 16 and hidden % block_size:
        block_size //= 2
    return block_size if block_size >= 16 else None


def _name_nodes(model: onnx.ModelProto) -> None:
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"  # the quantizers select nodes by name


def _gather_8bit(model: onnx.ModelProto, head: graph.Head, block_size: int) -> None:
    """The embedding Gather -> an 8-bit symmetric GatherBlockQuantized of its own (ONNX Runtime's quantizer
    takes 4-bit Gathers only): the table quantized as the MatMulNBits blocks of its transpose, (vocab, hidden)
    uint8 codes and (vocab, hidden / block) scales. The block shrinks to the largest power of two >= 16 that
    divides the hidden size; a hidden size with none keeps the table float32."""
    from onnx import helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_8bits

    tensor = graph.initializer(model, head.embedding)
    if tensor is None:
        return
    table = numpy_helper.to_array(tensor).astype(np.float32)
    vocab, hidden = table.shape
    block = _dividing_block(hidden, block_size)
    if block is None:
        return
    block_size = block
    blocks = hidden // block_size
    codes = np.zeros((vocab, blocks, block_size), dtype=np.uint8)
    scales = np.zeros((vocab, blocks), dtype=np.float32)
    zero_points = np.zeros((vocab, blocks), dtype=np.uint8)
    quantize_matmul_8bits(
        codes, np.ascontiguousarray(table.T), scales, zero_points, block_size, vocab, hidden, True
    )
    data, scale_name = f"{head.embedding}_Q8", f"{head.embedding}_scales"
    model.graph.initializer.extend([
        numpy_helper.from_array(codes.reshape(vocab, hidden), data),
        numpy_helper.from_array(scales, scale_name),
    ])
    gather = next(n for n in model.graph.node if n.name == head.embedding_node)
    quantized = helper.make_node(
        "GatherBlockQuantized", [data, gather.input[1], scale_name], list(gather.output),
        name=f"{head.embedding_node}_Q8", domain="com.microsoft", bits=INT8_BITS, block_size=block_size,
        gather_axis=0, quantize_axis=1,
    )
    index = list(model.graph.node).index(gather)
    del model.graph.node[index]
    model.graph.node.insert(index, quantized)
    if not graph.consumers(model, head.embedding):
        model.graph.initializer.remove(tensor)


def _nbits_module() -> Any:
    try:
        with no_basic_config():
            from onnxruntime.quantization import matmul_nbits_quantizer
    except ImportError as exc:
        raise ConversionError(
            f"INT8 and INT4 quantization need ONNX Runtime's MatMulNBits quantizer, which failed to import ({exc}); "
            "install the export extra: pip install 'tandem-inference[export]'"
        ) from exc
    return matmul_nbits_quantizer


def quantize_int4(model: onnx.ModelProto, options: Int4Options) -> onnx.ModelProto:
    """Block-wise INT4 of an FP32 decoder (in memory); returns the quantized model."""
    nbits = _nbits_module()
    _name_nodes(model)
    head = graph.find_head(model)
    hidden = graph.initializer(model, head.embedding).dims[1] if head is not None else 0
    head_block = options.head_block_size or options.block_size
    share = head is not None and head.tied and options.quantize_embeddings and hidden % head_block == 0
    gathers = [node.name for node in model.graph.node if node.op_type == "Gather"]
    matmuls = [node.name for node in model.graph.node if node.op_type == "MatMul"]
    try:
        with quiet_libraries():
            if head is not None:
                # Pass 1: the LM head (and the embedding), rounded to nearest.
                model = _run(
                    nbits, model, options, bits=options.head_bits, block_size=head_block,
                    symmetric=options.head_bits == 8 or options.symmetric,
                    exclude=[*gathers, *(name for name in matmuls if name != head.lm_head_node)],
                )
                if share:
                    graph.share_int4_embedding(model, head, options.head_bits)
                elif options.quantize_embeddings:
                    # An untied (or unshareable) embedding: its own 4-bit GatherBlockQuantized.
                    model = _run(
                        nbits, model, options, bits=4, symmetric=options.symmetric, op_types=("Gather",),
                        exclude=[name for name in gathers if name != head.embedding_node],
                    )
            # Pass 2: every other MatMul, with the chosen algorithm.
            model = _quantize_layers(nbits, model, options, [] if head is None else [head.lm_head_node])
            if options.scale_type == "float16":
                _half_precision_scales(model)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime's INT4 quantizer ({options.algorithm}) failed: {exc}") from exc
    return model


def _run(
    nbits: Any, model: onnx.ModelProto, options: Int4Options | Int8Options, *, bits: int, symmetric: bool,
    exclude: list[str], op_types: tuple[str, ...] = ("MatMul",), algo_config: Any = None,
    block_size: int | None = None,
) -> onnx.ModelProto:
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size or options.block_size,
        is_symmetric=symmetric,
        accuracy_level=options.accuracy_level,
        nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        algo_config=algo_config,
    )
    quantizer.process()
    return quantizer.model.model


def _quantize_layers(nbits: Any, model: onnx.ModelProto, options: Int4Options, exclude: list[str]) -> onnx.ModelProto:
    """The decoder layers' MatMuls (all but ``exclude``) to 4-bit MatMulNBits with ``options.algorithm``."""
    if options.algorithm == "hqq":
        config = nbits.HQQWeightOnlyQuantConfig(
            block_size=options.block_size, bits=4, op_types_to_quantize=("MatMul",),
            quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        model = _run(nbits, model, options, bits=4, symmetric=False, exclude=exclude, algo_config=config)
        _set_accuracy_level(model, options.accuracy_level)
    elif options.algorithm == "k_quant":
        _replace_matmuls(model, options, exclude, _k_quant_blocks)
    elif options.zero_points in ("float", "offset"):
        scale_type = np.dtype(options.scale_type)
        _replace_matmuls(
            model, options, exclude, lambda weight, block: _min_max_blocks(weight, block, scale_type),
            offset=options.zero_points == "offset",
        )
    else:  # ONNX Runtime's own round to nearest: integer zero points, or symmetric
        model = _run(nbits, model, options, bits=4, symmetric=options.symmetric, exclude=exclude)
    return model


def _set_accuracy_level(model: onnx.ModelProto, level: int | None) -> None:
    """HQQ's quantizer writes no accuracy_level; set it like the other algorithms do."""
    from onnx import helper

    if not level:
        return
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and not any(a.name == "accuracy_level" for a in node.attribute):
            node.attribute.append(helper.make_attribute("accuracy_level", level))


Blocks = tuple[np.ndarray, np.ndarray, np.ndarray]
"""4-bit codes (N, blocks, block) uint8 in [0, 15], scales (N, blocks) float32, and zero points (N, blocks):
uint8 in [0, 15] (integer) or float32 (float); the weight is scale * (code - zero point)."""


def _pack_4bit_zero_points(zero_points: np.ndarray) -> np.ndarray:
    """(N, blocks) uint8 in [0, 15] -> MatMulNBits' (N, ceil(blocks / 2)) packing (low nibble first, each row
    padded with the neutral 8)."""
    rows, blocks = zero_points.shape
    if blocks % 2:
        zero_points = np.concatenate([zero_points, np.full((rows, 1), 8, dtype=np.uint8)], axis=1)
    return (zero_points[:, 0::2] | (zero_points[:, 1::2] << 4)).astype(np.uint8)


def _replace_matmuls(
    model: onnx.ModelProto, options: Int4Options, exclude: list[str], quantize: Callable[[np.ndarray, int], Blocks],
    *, offset: bool = False,
) -> None:
    """Every float32 MatMul weight (K, N) not in ``exclude`` -> a 4-bit asymmetric MatMulNBits whose blocks
    ``quantize(weight padded to whole blocks, block)`` chooses. (ONNX Runtime's own packing for its k_quant
    algorithm gets the zero points wrong when a row has an odd number of blocks, e.g. hidden 576 at block 64.)

    ``offset``: float zero points z are stored as the integer round(z) (MatMulNBits' fast kernels take 4-bit
    zero points only) plus the per-block offset scale * (round(z) - z) that the rounding moved the block by,
    added back by ``_add_offset_correction``."""
    from onnx import helper, numpy_helper

    block = options.block_size
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes: list[onnx.NodeProto] = []
    block_sums: dict[str, str] = {}
    for node in model.graph.node:
        tensor = inits.get(node.input[1]) if node.op_type == "MatMul" and node.name not in exclude else None
        weight = numpy_helper.to_array(tensor) if tensor is not None else None
        if tensor is None or weight is None or weight.ndim != 2 or weight.dtype != np.float32:
            nodes.append(node)
            continue
        rows, cols = weight.shape  # K, N
        blocks = -(-rows // block)
        padded = np.pad(weight, ((0, blocks * block - rows), (0, 0))) if blocks * block > rows else weight
        codes, scales, zero_points = quantize(padded, block)
        output = node.output[0]
        correction: np.ndarray | None = None
        if offset and zero_points.dtype != np.uint8:
            integer = np.clip(np.round(zero_points), 0, 15)
            correction = (scales.astype(np.float64) * (integer - zero_points)).T  # (blocks, N)
            zero_points = integer.astype(np.uint8)
            output = f"{output}/main"
        if zero_points.dtype == np.uint8:
            zero_points = _pack_4bit_zero_points(zero_points)
        new = [
            numpy_helper.from_array((codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8), f"{tensor.name}_Q4"),
            numpy_helper.from_array(scales.astype(np.float32), f"{tensor.name}_scales"),
            numpy_helper.from_array(zero_points, f"{tensor.name}_zero_points"),
        ]
        model.graph.initializer.extend(new)
        attributes: dict[str, int] = {"K": rows, "N": cols, "bits": 4, "block_size": block}
        if options.accuracy_level is not None:
            attributes["accuracy_level"] = options.accuracy_level
        nodes.append(helper.make_node(
            "MatMulNBits", [node.input[0], *(t.name for t in new)], [output], name=f"{node.name}_Q4",
            domain="com.microsoft", **attributes,
        ))
        if correction is not None:
            nodes.extend(_offset_correction(model, node, tensor.name, correction, block, rows, block_sums))
        readers[tensor.name] -= 1
        if not readers[tensor.name]:
            model.graph.initializer.remove(tensor)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _offset_correction(
    model: onnx.ModelProto, node: onnx.NodeProto, weight: str, correction: np.ndarray, block: int, rows: int,
    block_sums: dict[str, str],
) -> list[onnx.NodeProto]:
    """x @ W = MatMulNBits(x) + S(x) @ D, S(x) the sums of x over each block of the input dimension, D the
    (blocks, N) offsets: int8 per output column (DequantizeLinear), so that they cost 8 bits per block."""
    from onnx import helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    source = node.input[0]
    blocks = correction.shape[0]
    if source not in block_sums:
        sums = f"{source}/block_sums"
        shape, axes = f"{sums}/shape", f"{sums}/axes"
        padded = f"{source}/padded"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array([0, 0, blocks, block], dtype=np.int64), shape),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), axes),
        ])
        reshaped = source
        if blocks * block != rows:  # the padded rows of the weight read zeros
            pads = f"{padded}/pads"
            model.graph.initializer.append(
                numpy_helper.from_array(np.array([0, 0, 0, 0, 0, blocks * block - rows], dtype=np.int64), pads)
            )
            nodes.append(helper.make_node("Pad", [source, pads], [padded], name=f"{padded}/pad"))
            reshaped = padded
        nodes.append(helper.make_node("Reshape", [reshaped, shape], [f"{sums}/blocks"], name=f"{sums}/reshape"))
        nodes.append(helper.make_node(
            "ReduceSum", [f"{sums}/blocks", axes], [sums], name=f"{sums}/sum", keepdims=0
        ))
        block_sums[source] = sums
    peak = np.abs(correction).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    quantized = np.clip(np.round(correction / scale), -127, 127).astype(np.int8)
    offsets = f"{weight}_block_offsets"
    model.graph.initializer.extend([
        numpy_helper.from_array(quantized, f"{offsets}_q8"),
        numpy_helper.from_array(scale.astype(np.float32), f"{offsets}_scale"),
    ])
    output = node.output[0]
    nodes.append(helper.make_node(
        "DequantizeLinear", [f"{offsets}_q8", f"{offsets}_scale"], [offsets], name=f"{node.name}/offsets", axis=1
    ))
    nodes.append(helper.make_node(
        "MatMul", [block_sums[source], offsets], [f"{output}/offset"], name=f"{node.name}/offset"
    ))
    nodes.append(helper.make_node("Add", [f"{output}/main", f"{output}/offset"], [output], name=f"{node.name}/add"))
    return nodes


def _min_max_blocks(weight: np.ndarray, block: int, scale_type: np.dtype) -> Blocks:
    """Round to nearest on each block's own [min, max] with a float zero point (llama.cpp's Q4_1 block):
    scale = (max - min) / 15, zero point = -min / scale, both rounded to ``scale_type`` first so that the codes
    fit the values stored."""
    rows, cols = weight.shape
    x = np.ascontiguousarray(weight.T).reshape(cols, rows // block, block).astype(np.float64)
    low, high = x.min(axis=-1), x.max(axis=-1)
    scale = ((high - low) / 15.0).astype(scale_type).astype(np.float64)
    scale[scale == 0] = 1.0  # a constant block: every code 0 gives back its value through the zero point
    zero = (-low / scale).astype(scale_type).astype(np.float64)
    codes = np.clip(np.round(x / scale[..., None] + zero[..., None]), 0, 15).astype(np.uint8)
    return codes, scale.astype(np.float32), zero.astype(np.float32)


def _k_quant_blocks(weight: np.ndarray, block: int) -> Blocks:
    """llama.cpp's k-quant search of each block's scale and minimum: ONNX Runtime's ``quant_tensor_k_quant_cpu``,
    as its quantizer's ``k_quant`` algorithm runs it (the zero point rounded to an integer)."""
    from onnxruntime.quantization.neural_compressor.weight_only import quant_tensor_k_quant_cpu

    rows, cols = weight.shape
    codes, scale, zero = quant_tensor_k_quant_cpu(np.ascontiguousarray(weight.T), 4, block)
    blocks = rows // block
    return (
        codes.astype(np.uint8).reshape(cols, blocks, block),
        scale.astype(np.float32).reshape(cols, blocks),
        zero.astype(np.uint8).reshape(cols, blocks),
    )


def _half_precision_scales(model: onnx.ModelProto) -> None:
    """Store every MatMulNBits / GatherBlockQuantized scale (and float zero point) in float16 and run those ops
    in float16: MatMulNBits takes its input through one Cast per input tensor and each op's output goes back to
    float32 through a Cast, so the rest of the graph (norms, attention, KV cache, logits) stays float32."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    halved: set[str] = set()

    def halve(name: str) -> None:
        tensor = inits.get(name)
        if tensor is None or name in halved or tensor.data_type != TensorProto.FLOAT:
            return
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name))
        halved.add(name)

    casts: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type not in ("MatMulNBits", "GatherBlockQuantized") or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        for index in (2, 3):
            if index < len(node.input):
                halve(node.input[index])
        if node.op_type == "MatMulNBits":
            source = node.input[0]
            if source not in casts:
                casts[source] = f"{source}/fp16"
                nodes.append(helper.make_node(
                    "Cast", [source], [casts[source]], name=f"{node.name}/cast_in", to=TensorProto.FLOAT16
                ))
            node.input[0] = casts[source]
        output = node.output[0]
        node.output[0] = f"{output}/fp16"
        nodes.append(node)
        nodes.append(helper.make_node(
            "Cast", [node.output[0]], [output], name=f"{node.name}/cast_out", to=TensorProto.FLOAT
        ))
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
