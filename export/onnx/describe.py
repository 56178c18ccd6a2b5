"""What an ONNX artifact actually stores: each weight's type, described by the op that reads it."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

_INDEX_TYPES = {"int64", "int32", "bool"}
"""Shapes, axes and indices: not weights."""


def _type_name(data_type: int) -> str:
    from onnx import TensorProto

    name = TensorProto.DataType.Name(data_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


def _attribute(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """Initializer name -> storage type and role, e.g. ``"uint8 (MatMulNBits q4 block 32)"``.

    Index and shape constants (int64, int32, bool) are left out; everything else is listed.
    """
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            uses[name].append((node, index))
    produced_by_reshape_of = {
        node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Reshape"
    }
    reshaped_uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for output, source in produced_by_reshape_of.items():
        reshaped_uses[source].extend(uses.get(output, []))
    dims = {t.name: list(t.dims) for t in model.graph.initializer}

    types: dict[str, str] = {}
    for tensor in model.graph.initializer:
        base = _type_name(tensor.data_type)
        if base in _INDEX_TYPES:
            continue
        roles = [_role(node, index, tensor.name, dims) for node, index in uses.get(tensor.name, [])]
        roles += [
            _role(node, index, tensor.name, dims) + " via Reshape" for node, index in reshaped_uses.get(tensor.name, [])
        ]
        roles = list(dict.fromkeys(role for role in roles if role))
        types[tensor.name] = f"{base} ({'; '.join(roles)})" if roles else base
    return types


def _role(node: onnx.NodeProto, index: int, name: str, dims: dict[str, list[int]]) -> str:
    op = node.op_type
    if op in ("MatMulNBits", "GatherBlockQuantized"):
        bits = _attribute(node, "bits", 4)
        block = _attribute(node, "block_size")
        what = {0: f"q{bits} block {block}", 2: "scales", 3: "zero points"} if op == "GatherBlockQuantized" else {
            1: f"q{bits} block {block}", 2: "scales", 3: f"q{bits} zero points"
        }
        return f"{op} {what[index]}" if index in what else ""
    if op in ("MatMulInteger", "DynamicQuantizeMatMul"):
        if index == 1:
            scale = dims.get(name.removesuffix("_quantized") + "_scale")
            granularity = "per tensor" if scale == [] else "per channel"
            return f"{op} int8 weight, {granularity}"
        return f"{op} zero points" if index == 3 else ""
    if op == "Gather" and index == 0:
        if name.endswith("_quantized"):
            return "embedding, int8 per tensor, dequantized after the Gather"
        return "embedding"
    if op == "DequantizeLinear":
        return {1: "DequantizeLinear scale", 2: "DequantizeLinear zero point"}.get(index, "")
    if op == "Mul" and name.endswith("_scale") and name.removesuffix("_scale") + "_quantized" in dims:
        return "int8 dequantization scales"
    if op == "Transpose" and node.name.endswith("/tied"):
        return "tied LM head, transposed"
    if op == "MatMul" and index == 1:
        return "MatMul weight"
    return ""
