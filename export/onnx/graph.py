"""Reading, editing and writing ONNX graphs: weights on disk, the embedding and the LM head, tied weights.

The exporter writes a tied LM head (``tie_word_embeddings``) as a second, transposed copy of the embedding
table. ``untie`` finds it; FP32 artifacts then read the head through a Transpose of the embedding
(``share_fp32_lm_head``) and INT4 artifacts read the embedding through a Reshape of the head's 4- or 8-bit
blocks (``share_int4_embedding``), so the table is stored once either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.errors import ConversionError

if TYPE_CHECKING:
    import onnx

EXTERNAL_DATA_SUFFIX = "_data"
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
"""Weights above this many bytes go to ``model.onnx_data``: a protobuf file cannot exceed 2 GiB."""


def load(model_file: Path) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load(str(model_file), load_external_data=True)
    except Exception as exc:
        raise ConversionError(f"cannot read the ONNX model {model_file.name}: {exc}") from exc


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes one initializer takes on disk (inline or in the external data file)."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        entries = {entry.key: entry.value for entry in tensor.external_data}
        if "length" in entries:
            return int(entries["length"])
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return int(numpy_helper.to_array(tensor).nbytes)


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_bytes(t) for t in model.graph.initializer)


def save(model: onnx.ModelProto, model_file: Path) -> list[str]:
    """Write ``model`` (with its weights in ``<name>_data`` when they are too large for one protobuf
    file); return the names of the files written. ``model`` keeps its weights in memory."""
    import onnx

    external = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = model_file.name + EXTERNAL_DATA_SUFFIX
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        onnx.save_model(
            model, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True,
            location=data_name, size_threshold=1024,
        )
        # Saving moved the weights out of ``model``; read them back so that it stays usable.
        load_external_data_for_model(model, str(model_file.parent))
        return [model_file.name, data_name]
    onnx.save_model(model, str(model_file))
    return [model_file.name]


def model_files(folder: Path, model_file: str) -> list[str]:
    """The .onnx file and the external data files its initializers point to (optimum writes
    ``model.onnx_data``, ONNX Runtime's quantizer ``model.onnx.data``)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(folder / model_file), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [model_file, *sorted(locations)]


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in model.graph.initializer if t.name == name), None)


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if name in node.input]


@dataclass(frozen=True)
class Head:
    """Where the token embedding and the LM head sit in an exported graph."""

    embedding_node: str
    """The Gather reading ``input_ids``."""
    embedding: str
    """Its (vocab, hidden) initializer."""
    lm_head_node: str
    """The MatMul producing ``logits`` (through Gemma 2's soft-cap, if any)."""
    lm_head: str
    """Its (hidden, vocab) initializer."""
    tied: bool
    """The head is the transposed embedding, value for value."""


_LOGIT_EPILOGUE = frozenset({"Div", "Mul", "Tanh", "Cast", "Identity"})
"""Element-wise ops allowed between the LM head and ``logits``: Gemma 2's final soft-cap,
cap * tanh(logits / cap), is Div, Tanh, Mul. Without this walk its head went unseen: the fp32 artifact stored the
tied table twice (2.61x F16 instead of 2.0x on the tiny toy) and INT4 left the embedding float32 and the head
4-bit (0.96x F16 instead of 0.40x)."""


def _lm_head_matmul(model: onnx.ModelProto, inits: dict[str, onnx.TensorProto]) -> onnx.NodeProto | None:
    """The MatMul with a constant weight that ``logits`` comes from, walking back through ``_LOGIT_EPILOGUE``
    ops that have one non-constant input."""
    producers = {output: node for node in model.graph.node for output in node.output}
    name = "logits"
    for _ in range(len(_LOGIT_EPILOGUE) + 2):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "MatMul":
            return node if node.input[1] in inits else None
        variable = [
            i for i in node.input if i not in inits and i in producers and producers[i].op_type != "Constant"
        ]
        if node.op_type not in _LOGIT_EPILOGUE or len(variable) != 1:
            return None
        name = variable[0]
    return None


def find_head(model: onnx.ModelProto) -> Head | None:
    """Locate the embedding Gather and the LM-head MatMul; None if the graph does not have that shape."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    gather = next(
        (n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids" and n.input[0] in inits),
        None,
    )
    matmul = _lm_head_matmul(model, inits)
    if gather is None or matmul is None or not gather.name or not matmul.name:
        return None
    embedding, lm_head = inits[gather.input[0]], inits[matmul.input[1]]
    tied = (
        embedding.data_type == lm_head.data_type
        and list(embedding.dims) == list(reversed(lm_head.dims))
        and np.array_equal(numpy_helper.to_array(embedding).T, numpy_helper.to_array(lm_head))
    )
    return Head(gather.name, embedding.name, matmul.name, lm_head.name, tied)


def _remove_initializer(model: onnx.ModelProto, name: str) -> None:
    if consumers(model, name):
        return
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == name:
            del model.graph.initializer[index]
            return


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def share_fp32_lm_head(model: onnx.ModelProto, head: Head) -> None:
    """Tied weights: feed the LM head a Transpose of the embedding and drop its own copy."""
    from onnx import helper

    transposed = f"{head.embedding}_transposed"
    transpose = helper.make_node(
        "Transpose", [head.embedding], [transposed], name=f"{head.lm_head_node}/tied", perm=[1, 0]
    )
    matmul = _node(model, head.lm_head_node)
    matmul.input[1] = transposed
    model.graph.node.insert(list(model.graph.node).index(matmul), transpose)
    _remove_initializer(model, head.lm_head)


def share_int4_embedding(model: onnx.ModelProto, head: Head, bits: int = 4) -> None:
    """Tied weights, after the LM head became MatMulNBits: read the embedding from the head's 4- or 8-bit blocks.

    MatMulNBits stores the head as (vocab, hidden / block, block * bits / 8) uint8 blocks with (vocab, blocks)
    scales and zero points (two per byte at 4 bits); GatherBlockQuantized reads uint8 data of
    (vocab, hidden * bits / 8) packed along the last axis with the same scales and zero points. A Reshape bridges
    the two shapes, so both ops dequantize the very same bytes. Needs the hidden size to be a multiple of the
    block size.
    """
    from onnx import helper, numpy_helper

    nbits = next(
        (n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name == f"{head.lm_head_node}_Q{bits}"), None
    )
    if nbits is None:
        raise ConversionError("the tied LM head was not quantized to MatMulNBits; cannot share the embedding")
    gather = _node(model, head.embedding_node)
    shape_name = f"{head.embedding}_q{bits}_shape"
    shared = f"{head.embedding}_q{bits}"
    attributes = {a.name: a.i for a in nbits.attribute}
    vocab, hidden, block_size = attributes["N"], attributes["K"], attributes["block_size"]
    if hidden % block_size:
        raise ConversionError(f"hidden size {hidden} is not a multiple of block size {block_size}; cannot share")
    shape = np.array([vocab, hidden * bits // 8], dtype=np.int64)
    model.graph.initializer.append(numpy_helper.from_array(shape, shape_name))
    reshape = helper.make_node("Reshape", [nbits.input[1], shape_name], [shared], name=f"{head.embedding_node}/tied")
    quantized = helper.make_node(
        "GatherBlockQuantized",
        [shared, gather.input[1], *nbits.input[2:4]],
        list(gather.output),
        name=f"{head.embedding_node}_Q{bits}",
        domain="com.microsoft",
        bits=bits,
        block_size=block_size,
        gather_axis=0,
        quantize_axis=1,
    )
    index = list(model.graph.node).index(gather)
    del model.graph.node[index]
    model.graph.node.insert(index, quantized)
    model.graph.node.insert(index, reshape)
    _remove_initializer(model, head.embedding)


def folder_bytes(folder: str | os.PathLike[str], names: list[str]) -> int:
    return sum((Path(folder) / name).stat().st_size for name in names)
