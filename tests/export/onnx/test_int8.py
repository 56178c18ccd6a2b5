"""INT8: every MatMul an 8-bit weight-only MatMulNBits, the embedding an 8-bit GatherBlockQuantized (the tied one
reading the head's blocks), each weight on its block's full 8-bit grid, and the bundle saying so."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from export.errors import SpecError
from export.onnx import OnnxRunner
from export.onnx.options import Int8Options


def _model(artifact):
    import onnx

    return onnx.load(str(artifact.path / artifact.model_file))


def _arrays(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _attributes(node) -> dict[str, int]:
    return {a.name: a.i for a in node.attribute}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_int8_quantizes_every_matmul_to_8bit_blocks_and_stores_the_tied_embedding_once(arch, onnx_artifact) -> None:
    artifact = onnx_artifact(arch, "int8")
    types = artifact.tensor_types
    model = _model(artifact)
    weights = _arrays(model)

    assert types["model.layers.1.mlp.down_proj.weight_Q8"] == "uint8 (MatMulNBits q8 block 32)"
    assert types["model.layers.1.mlp.down_proj.weight_scales"] == "float16 (MatMulNBits scales)"
    # The tied embedding reads the LM head's 8-bit blocks: one table.
    assert types["lm_head.weight_Q8"] == "uint8 (MatMulNBits q8 block 32; GatherBlockQuantized q8 block 32 via Reshape)"
    assert artifact.tied_embeddings and not any(name.startswith("model.embed_tokens") for name in types)
    # Weight-only: no MatMul left with a constant weight, no dynamic quantization, no zero points (symmetric).
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear"}
    assert not [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    nbits = [node for node in model.graph.node if node.op_type == "MatMulNBits"]
    assert len(nbits) == 7 * artifact.io["kv_cache"]["num_layers"] + 1  # q, k, v, o, gate, up, down; the head
    for node in nbits:
        attributes = _attributes(node)
        assert (attributes["bits"], attributes["block_size"], attributes["accuracy_level"]) == (8, 32, 4), node.name
        assert len(node.input) == 3, node.name
    float_weights = [name for name, kind in types.items() if kind == "float32" and "norm" not in name]
    assert all(name.endswith("bias") for name in float_weights)  # qwen2's q/k/v biases stay float32
    # 8 bits + a float16 scale per 32 weights: 8.5 bits, 0.53 x F16, plus the float32 norms (and biases).
    assert 0.53 < artifact.size_ratio_vs_f16 < 0.55
    assert artifact.opsets == {"ai.onnx": 18, "com.microsoft": 1}


def test_int8_weights_lie_on_their_block_s_full_8bit_grid(onnx_artifact, hf_model) -> None:
    """Each block of 32 input weights: code = round(w / scale) + 128 with scale = (signed max) / -128, so that the
    largest weight takes code 0 and the range is all 8 bits (not the reduced 7); the float16 scale gives each
    weight back within half a step, but for those clipped at code 255 (as large as the maximum, of the other
    sign) within one."""
    model = _model(onnx_artifact("llama", "int8"))
    weights = _arrays(model)
    source = dict(hf_model("llama").named_parameters())
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        codes, scales = weights[f"{name}_Q8"].astype(np.float64), weights[f"{name}_scales"].astype(np.float64)
        tensor = source.get(name, source["model.embed_tokens.weight"])  # the tied head is the embedding
        original = tensor.detach().numpy().astype(np.float64)  # torch (out, in): one row per output
        rows, blocks, block = codes.shape
        assert (rows, blocks * block) == original.shape and block == 32
        assert (codes.min(axis=-1) == 0).all(), name  # each block's largest |weight| at an end of the range
        back = (codes - 128.0) * scales[..., None]
        error = np.abs(back.reshape(rows, -1) - original)
        step = np.abs(np.repeat(scales, block, axis=1))
        bound = np.where(codes.reshape(rows, -1) == 255, 1.0, 0.5) + 0.07  # + the float16 rounding of the scale
        assert (error <= bound * step).all(), name


def _gather_output(model, node, ids: np.ndarray) -> np.ndarray:
    """Run one GatherBlockQuantized node of ``model`` on its own (with the Reshape that feeds it a shared table)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weights = {t.name: t for t in model.graph.initializer}
    feeding = [n for n in model.graph.node if n.output[0] == node.input[0] and n.op_type == "Reshape"]
    nodes = [*feeding, node]
    used = [name for n in nodes for name in n.input if name in weights]
    graph = helper.make_graph(
        nodes, "gather", [helper.make_tensor_value_info(node.input[1], TensorProto.INT64, [None])],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT16, None)], [weights[name] for name in used],
    )
    mini = helper.make_model(graph, opset_imports=list(model.opset_import))
    session = ort.InferenceSession(mini.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {node.input[1]: ids})[0].astype(np.float64)


@pytest.mark.parametrize(
    ("spec_fields", "embedding_block", "shared"),
    [({"tie_word_embeddings": False}, 32, False), ({"hidden_size": 48}, 16, True)],
    ids=["untied", "tied-hidden-48"],
)
def test_int8_embedding_tables_dequantize_to_the_source_table(
    spec_fields, embedding_block, shared, toy_cache: Path, tmp_path: Path
) -> None:
    """An untied embedding gets its own 8-bit table; a tied one whose hidden size (48) the layers' block (32)
    does not divide shares the head's blocks of 16. Either way GatherBlockQuantized gives the source's rows back
    within half a step."""
    from export.onnx import export_onnx
    from export.source import SourceModel
    from export.toy_models import ToyModelSpec, cached_toy_model

    source = SourceModel.open(cached_toy_model(dataclasses.replace(ToyModelSpec.tiny("llama"), **spec_fields),
                                               toy_cache))
    artifact = export_onnx(source, tmp_path / "int8", "int8")
    model = _model(artifact)
    gather = next(node for node in model.graph.node if node.op_type == "GatherBlockQuantized")
    table = dict(source.load_model().named_parameters())["model.embed_tokens.weight"].detach().numpy()

    assert _attributes(gather)["bits"] == 8 and _attributes(gather)["block_size"] == embedding_block
    data = "lm_head.weight_Q8" if shared else "model.embed_tokens.weight_Q8"
    assert artifact.tensor_types[data].startswith(
        f"uint8 (MatMulNBits q8 block {embedding_block}; GatherBlockQuantized q8 block {embedding_block} via Reshape)"
        if shared else f"uint8 (GatherBlockQuantized q8 block {embedding_block})"
    )
    assert artifact.tied_embeddings is shared
    assert "model.embed_tokens.weight" not in artifact.tensor_types  # no float32 copy left
    if not shared:
        assert artifact.tensor_types["lm_head.weight_Q8"] == "uint8 (MatMulNBits q8 block 32)"
    ids = np.arange(table.shape[0], dtype=np.int64)
    rows = _gather_output(model, gather, ids)
    scales = _arrays(model)["lm_head.weight_scales" if shared else "model.embed_tokens.weight_scales"]
    step = np.repeat(np.abs(scales.astype(np.float64)), embedding_block, axis=1)
    assert rows.shape == table.shape
    assert (np.abs(rows - table) <= 1.07 * step + 1e-3 * np.abs(table)).all()  # + float16 output rounding
    assert np.median(np.abs(rows - table) / step) < 0.3  # rounding to nearest: a quarter step on average
    assert np.isfinite(OnnxRunner(artifact.path).logits([1, 2, 3])).all()


def test_the_int8_bundle_manifest_describes_the_blocks(bundles, trusted) -> None:
    from edge_runtime.bundle import verify_bundle

    manifest = verify_bundle(bundles("llama", "onnx", "int8"), trusted)

    assert manifest.extra["onnx"]["quantization"] == {
        "type": "int8", "method": "onnxruntime MatMulNBits / GatherBlockQuantized", "bits": 8, "symmetric": True,
        "block_size": 32, "accuracy_level": 4, "scale_type": "float16", "quantize_embeddings": True,
    }
    assert manifest.tensor_types["model.layers.0.self_attn.q_proj.weight_Q8"] == "uint8 (MatMulNBits q8 block 32)"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"block_size": 48}, "block_size=48 must be a power of two"),
        ({"block_size": 8}, "block_size=8 must be a power of two of at least 16"),
        ({"accuracy_level": 5}, "accuracy_level=5 must be one of 0, 1, 2, 3, 4"),
        ({"scale_type": "bfloat16"}, "scale_type='bfloat16' must be one of float16, float32"),
        ({"quantize_embeddings": "yes"}, "quantize_embeddings='yes' must be true or false"),
    ],
)
def test_invalid_int8_options_are_refused(options, named) -> None:
    with pytest.raises(SpecError) as caught:
        Int8Options(**options)
    assert named in str(caught.value)


@pytest.fixture(scope="module")
def raw_fp32(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama's FP32 graph as the pipeline hands it to quantize_int8: weights named, the tied head still
    its own copy."""
    from export.onnx import graph
    from export.onnx.convert import export_fp32, name_weights
    from export.source import SourceModel

    folder = tmp_path_factory.mktemp("raw-fp32")
    model = graph.load(export_fp32(SourceModel.open(tiny_llama).load_model(), folder / "export"))
    name_weights(model)
    graph.save(model, folder / "model.onnx")
    return folder / "model.onnx"


@pytest.mark.parametrize(
    "options",
    [Int8Options(block_size=64, scale_type="float32", accuracy_level=None), Int8Options(quantize_embeddings=False)],
    ids=["block64-fp32-unset", "float-embedding"],
)
def test_int8_options_reach_the_graph(options, raw_fp32: Path, tmp_path: Path) -> None:
    from export.onnx import graph
    from export.onnx.describe import tensor_types
    from export.onnx.quantize import quantize_int8

    files = quantize_int8(raw_fp32, tmp_path / "model.onnx", options)
    model = graph.load(tmp_path / files[0])
    types = tensor_types(model)
    nbits = [node for node in model.graph.node if node.op_type == "MatMulNBits"]

    assert files == ["model.onnx"] and len(nbits) == 15
    assert all(_attributes(node)["block_size"] == options.block_size for node in nbits)
    assert all(_attributes(node).get("accuracy_level") == options.accuracy_level for node in nbits)
    assert types["model.layers.0.mlp.up_proj.weight_scales"] == f"{options.scale_type} (MatMulNBits scales)"
    casts = [node for node in model.graph.node if node.name.endswith(("/cast_in", "/cast_out"))]
    assert bool(casts) is (options.scale_type == "float16")
    if options.quantize_embeddings:  # hidden 64: the head's blocks of 64 are the embedding's too
        assert types["lm_head.weight_Q8"].endswith("GatherBlockQuantized q8 block 64 via Reshape)")
    else:
        assert types["model.embed_tokens.weight"] == "float32 (embedding)"
        assert types["lm_head.weight_Q8"] == "uint8 (MatMulNBits q8 block 32)"
    assert np.isfinite(OnnxRunner(tmp_path).logits([1, 2, 3])).all()
