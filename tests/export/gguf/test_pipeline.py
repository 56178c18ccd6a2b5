"""`build_gguf_bundle`: every GGUF bundle is converted, checked, quantized, gated and signed — or not written."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.bundle import verify_bundle
from export.errors import OutputExistsError, QualityGateError, SpecError
from export.gguf.pipeline import build_gguf_bundle
from export.quality import Evaluation, QualityGate
from export.source import SourceModel


@pytest.fixture(scope="module")
def q8_bundle(tiny_llama: Path, signing_key, eval_text: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bundles") / "llama-q8"
    return build_gguf_bundle(
        SourceModel.open(tiny_llama), out, "q8_0", signing_key,
        evaluation=Evaluation(eval_text, QualityGate.default_for("q8_0")), tool_version="test",
    )


def test_the_bundle_verifies_and_its_manifest_says_what_it_holds(q8_bundle, signing_key, tiny_llama: Path) -> None:
    manifest = verify_bundle(q8_bundle.path, [signing_key.public_key()])
    source = SourceModel.open(tiny_llama)
    assert manifest == q8_bundle.manifest
    assert (manifest.format, manifest.quantization, manifest.architecture) == ("gguf", "q8_0", "llama")
    assert manifest.parameters == source.parameter_count()
    assert manifest.context_length == source.config["max_position_embeddings"]
    assert {"model.gguf", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(manifest.files)
    assert "Q8_0" in manifest.tensor_types.values()
    assert manifest.memory.weight_bytes < manifest.files["model.gguf"].size
    cfg = source.config
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    kv_values = cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim
    assert manifest.memory.kv_bytes_per_token == 2 * kv_values * 2  # K and V, F16
    check = manifest.evaluation["numerical_check"]
    assert check["max_abs_logit_diff"] <= check["atol"] + check["rtol"] * 100
    gate = manifest.evaluation["quality_gate"]
    assert gate["max_increase_pct"] == 1.0 and gate["delta_pct"] <= 1.0 and gate["tokens"] > 100
    assert manifest.chat_template and manifest.tool_version == "test"


def test_k_quant_fallbacks_on_narrow_rows_are_recorded(tiny_qwen2: Path, signing_key, eval_text: str,
                                                        tmp_path: Path) -> None:
    result = build_gguf_bundle(
        SourceModel.open(tiny_qwen2), tmp_path / "q4km", "q4_k_m", signing_key,
        evaluation=Evaluation(eval_text, QualityGate(100.0)),
    )
    # The tiny model's rows (64, 128 wide) are not multiples of 256, so no tensor can be Q4_K.
    assert "Q4_K" not in result.manifest.tensor_types.values()
    assert result.tensor_types.substituted
    assert result.manifest.evaluation["substituted_tensors"] == result.tensor_types.substituted


def test_a_failed_quality_gate_writes_nothing(tiny_qwen2: Path, signing_key, eval_text: str, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(QualityGateError, match=r"q4_0 GGUF: perplexity .* above the source model's"):
        build_gguf_bundle(
            SourceModel.open(tiny_qwen2), out, "q4_0", signing_key, evaluation=Evaluation(eval_text, QualityGate(0.0))
        )
    assert list(tmp_path.iterdir()) == []


def test_quantized_types_need_evaluation_data(tiny_llama: Path, signing_key, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="needs held-out evaluation text"):
        build_gguf_bundle(SourceModel.open(tiny_llama), tmp_path / "b", "q4_0", signing_key, evaluation=None)
    with pytest.raises(SpecError, match="'q3_k' is not one of"):
        build_gguf_bundle(SourceModel.open(tiny_llama), tmp_path / "b", "q3_k", signing_key, evaluation=None)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_bundle_is_not_replaced_unless_asked(q8_bundle, tiny_llama: Path, signing_key) -> None:
    with pytest.raises(OutputExistsError):
        build_gguf_bundle(SourceModel.open(tiny_llama), q8_bundle.path, "f16", signing_key, evaluation=None)
    verify_bundle(q8_bundle.path, [signing_key.public_key()])
