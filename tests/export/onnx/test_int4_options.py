"""The INT4 choices: validated with the flag to change, each a loadable graph that the export pipeline checks,
scores and decodes, and the zero-point types doing what they claim on blocks that lie on a Q4_1 grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from export.errors import SpecError
from export.onnx import Int4Options, OnnxRunner, onnx_perplexity
from export.quality import CHECK_PROMPTS, QualityGate, eval_windows, hf_window_nll, perplexity


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"algorithm": "awq"}, "algorithm='awq' (--int4-algorithm) must be one of rtn, k_quant, hqq"),
        ({"algorithm": "gptq"}, "GPTQ needs calibration text"),
        ({"algorithm": "k_quant", "symmetric": True}, "applies to --int4-algorithm rtn only"),
        ({"zero_points": "half"}, "zero_points='half' (--zero-points) must be one of offset, float, integer"),
        ({"symmetric": True, "zero_points": "float"}, "does not apply to symmetric blocks"),
        ({"algorithm": "k_quant", "zero_points": "float"}, "whose zero points are integer"),
        ({"algorithm": "hqq", "zero_points": "offset"}, "whose zero points are float"),
        ({"scale_type": "bfloat16"}, "scale_type='bfloat16' (--scale-type) must be one of float16, float32"),
        ({"head_bits": 6}, "head_bits=6 (--head-bits) must be one of 4, 8"),
        ({"head_bits": True}, "head_bits=True (--head-bits)"),
        ({"head_block_size": 48}, "head_block_size=48 (--head-block-size) must be a power of two"),
    ],
)
def test_invalid_int4_choices_name_the_flag_and_the_way_out(options, named) -> None:
    with pytest.raises(SpecError) as caught:
        Int4Options(**options)
    assert named in str(caught.value)


def test_zero_points_default_to_each_algorithm_s_own() -> None:
    assert Int4Options().zero_points == "offset"
    assert Int4Options(algorithm="k_quant").zero_points == "integer"
    assert Int4Options(algorithm="hqq").zero_points == "float"
    assert Int4Options(symmetric=True).zero_points is None
    assert Int4Options() == Int4Options(zero_points="offset")  # the manifest records the resolved choice
    assert Int4Options().head_block_size == 64
    assert Int4Options(head_bits=4, block_size=16).head_block_size == 16


CHOICES = {
    "rtn-offset": Int4Options(),
    "rtn-float": Int4Options(zero_points="float"),
    "rtn-integer-fp32": Int4Options(zero_points="integer", scale_type="float32", accuracy_level=None),
    "k_quant": Int4Options(algorithm="k_quant"),
    "hqq": Int4Options(algorithm="hqq"),
    "head4-block64": Int4Options(head_bits=4, block_size=64),
}


def _full_sequence_greedy(runner: OnnxRunner, ids: list[int], count: int) -> list[int]:
    sequence = list(ids)
    for _ in range(count):
        sequence.append(int(runner.logits(sequence)[-1].argmax()))
    return sequence[len(ids):]


@pytest.mark.parametrize("name", list(CHOICES))
def test_each_int4_choice_exports_checks_scores_and_decodes(
    name, onnx_artifact, hf_model, tokenizer, held_out_text
) -> None:
    options = CHOICES[name]
    artifact = onnx_artifact("llama", "int4", options)
    types = artifact.tensor_types
    runner = OnnxRunner(artifact.path)
    ids = tokenizer("llama").encode(CHECK_PROMPTS[0])

    assert artifact.int4 == options
    assert artifact.manifest_extra()["onnx"]["quantization"]["algorithm"] == options.algorithm
    assert types["model.layers.0.mlp.down_proj.weight_Q4"] == f"uint8 (MatMulNBits q4 block {options.block_size})"
    head = f"lm_head.weight_Q{options.head_bits}"
    assert types[head].startswith(f"uint8 (MatMulNBits q{options.head_bits} block {options.head_block_size}; ")
    scales = types["model.layers.0.mlp.down_proj.weight_scales"]
    assert scales == f"{options.scale_type} (MatMulNBits scales)"
    zero_points = types["model.layers.0.mlp.down_proj.weight_zero_points"]
    assert zero_points.split()[0] == ("uint8" if options.zero_points in ("integer", "offset") else options.scale_type)
    assert ("model.layers.0.mlp.down_proj.weight_block_offsets_q8" in types) is (options.zero_points == "offset")
    assert artifact.size_ratio_vs_f16 < 0.5
    assert artifact.check.conversion_max_diff < 1e-3
    assert runner.greedy(ids, 6) == _full_sequence_greedy(runner, ids, 6)  # weight-only: the cache path agrees

    windows = eval_windows(tokenizer("llama").encode(held_out_text), 64, max_windows=8)
    source = perplexity(windows, hf_window_nll(hf_model("llama")))
    quantized = onnx_perplexity(artifact.path, windows)
    assert math.isfinite(quantized.value)
    # Random toy weights make the deltas noise-sized; a broken graph is far off.
    assert abs(QualityGate(25.0).check(f"llama int4 {name}", source, quantized).delta_pct) < 25.0


def test_an_untied_head_at_8_bits_leaves_the_embedding_its_own_4_bit_table(tmp_path, toy_cache) -> None:
    import dataclasses

    from export.onnx import export_onnx
    from export.source import SourceModel
    from export.toy_models import ToyModelSpec, cached_toy_model

    untied = cached_toy_model(dataclasses.replace(ToyModelSpec.tiny("llama"), tie_word_embeddings=False), toy_cache)
    artifact = export_onnx(SourceModel.open(untied), tmp_path / "int4", "int4")
    types = artifact.tensor_types

    assert not artifact.tied_embeddings
    assert types["lm_head.weight_Q8"] == "uint8 (MatMulNBits q8 block 64)"
    assert types["model.embed_tokens.weight_Q4"] == "uint4 (GatherBlockQuantized q4 block 32)"
    assert np.isfinite(OnnxRunner(artifact.path).logits([1, 2, 3])).all()


def _q4_1_model(rows: int = 256, cols: int = 96, seed: int = 0):
    """One MatMul whose weight lies on llama.cpp Q4_1 blocks (32 rows, w = scale * code + min with a float16
    scale and minimum per block, both extremes used): what a model dequantized from a Q4_1 GGUF holds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (rows // 32, 32, cols))
    codes[:, 0], codes[:, 1] = 0, 15  # Q4_1 takes each block's scale and minimum from its own min and max
    scale = (rng.random((rows // 32, 1, cols)) * 0.02 + 0.005).astype(np.float16).astype(np.float32)
    low = (-rng.random((rows // 32, 1, cols)) * 0.15).astype(np.float16).astype(np.float32)
    weight = (codes * scale + low).reshape(rows, cols).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "q4_1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, cols])],
        [numpy_helper.from_array(weight, "w")],
    )
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), weight


@pytest.mark.parametrize(
    ("zero_points", "bound"), [("float", 1e-5), ("offset", 3e-3), ("integer", None)]
)
def test_float_and_offset_zero_points_keep_a_q4_1_block_that_integer_ones_move(zero_points, bound) -> None:
    import onnxruntime as ort

    from export.onnx.quantize import quantize_int4

    model, weight = _q4_1_model()
    options = Int4Options(zero_points=zero_points, scale_type="float32", accuracy_level=None)
    quantized = quantize_int4(model, options)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 8, weight.shape[0])).astype(np.float32)
    exact = x @ weight
    error = float(np.abs(session.run(None, {"x": x})[0] - exact).max() / np.abs(exact).max())

    if bound is None:
        # An integer zero point moves each block by up to half a step: the loss that re-quantizing such a
        # model costs (SmolLM2-135M from its Q4_1 GGUF: +22 % perplexity from the layers).
        assert error > 0.01
    else:
        assert error < bound
