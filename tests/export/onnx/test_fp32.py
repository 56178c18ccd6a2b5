"""FP32 export of both toy architectures: the ONNX model computes what the transformers model computes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.onnx import OnnxRunner
from export.quality import CHECK_PROMPTS, check_logits, hf_logits

ARCHS = ("llama", "qwen2", "mistral")


@pytest.mark.parametrize("arch", ARCHS, indirect=True)
def test_fp32_logits_match_the_source_model_on_the_check_prompts(arch, onnx_artifact, hf_model, tokenizer) -> None:
    artifact = onnx_artifact(arch, "fp32")
    model = hf_model(arch)
    runner = OnnxRunner(artifact.path)
    prompts = [tokenizer(arch).encode(prompt) for prompt in CHECK_PROMPTS]

    worst = check_logits(f"{arch} fp32", prompts, lambda ids: hf_logits(model, ids), runner.logits, atol=1e-3)

    assert worst < 1e-3
    assert artifact.check.conversion_max_diff == artifact.check.artifact_max_diff < 1e-3
    assert runner.logits(prompts[0]).shape == (len(prompts[0]), model.config.vocab_size)
    assert runner.logits(prompts[0]).dtype == np.float32


@pytest.mark.parametrize("arch", ARCHS, indirect=True)
def test_fp32_greedy_decoding_with_the_kv_cache_matches_transformers(arch, onnx_artifact, hf_model, tokenizer) -> None:
    import torch

    model = hf_model(arch)
    runner = OnnxRunner(onnx_artifact(arch, "fp32").path)
    eos = model.generation_config.eos_token_id
    for prompt in (CHECK_PROMPTS[0], CHECK_PROMPTS[2]):
        ids = tokenizer(arch).encode(prompt)
        with torch.inference_mode():
            expected = model.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False, max_new_tokens=16, pad_token_id=model.generation_config.pad_token_id,
            )[0, len(ids):].tolist()

        assert runner.greedy(ids, 16, eos_token_id=eos) == expected


@pytest.mark.parametrize("arch", ARCHS, indirect=True)
def test_fp32_artifact_describes_its_files_weights_and_inputs(arch, onnx_artifact, tiny_sources) -> None:
    from export.source import SourceModel

    artifact = onnx_artifact(arch, "fp32")
    source = SourceModel.open(tiny_sources[arch])

    assert artifact.model_file == "model.onnx" == artifact.files[0]
    assert {"config.json", "tokenizer.json"} <= set(artifact.files)
    assert sorted(p.name for p in artifact.path.iterdir()) == sorted(artifact.files)
    # Tied embeddings are stored once: the weights are the parameters in float32, not more.
    assert artifact.tied_embeddings
    assert artifact.weight_bytes == pytest.approx(4 * source.parameter_count(), rel=0.01)
    assert artifact.size_ratio_vs_f16 == pytest.approx(2.0, rel=0.01)
    assert {kind.split()[0] for kind in artifact.tensor_types.values()} == {"float32"}
    assert artifact.tensor_types["model.embed_tokens.weight"] == "float32 (embedding; tied LM head, transposed)"
    assert "lm_head.weight" not in artifact.tensor_types
    assert "model.layers.0.self_attn.q_proj.weight" in artifact.tensor_types
    if arch == "qwen2":
        assert "model.layers.0.self_attn.q_proj.bias" in artifact.tensor_types

    kv = artifact.io["kv_cache"]
    config = source.config
    assert kv["num_layers"] == config["num_hidden_layers"]
    assert kv["num_kv_heads"] == config["num_key_value_heads"]
    assert kv["head_dim"] == config["hidden_size"] // config["num_attention_heads"]
    assert kv["dtype"] == "float32" and artifact.kv_bytes_per_element == 4
    assert artifact.io["vocab_size"] == config["vocab_size"]
    names = [spec["name"] for spec in artifact.io["inputs"]]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert "past_key_values.1.value" in names
    json.dumps(artifact.manifest_extra())


def test_an_artifact_fills_a_bundle_manifest(onnx_artifact, tiny_sources) -> None:
    from edge_runtime.bundle import FileEntry, Manifest, MemoryEstimate, file_sha256
    from export.source import SourceModel

    artifact = onnx_artifact("qwen2", "fp32")
    source = SourceModel.open(tiny_sources["qwen2"])
    manifest = Manifest(
        name="toy-qwen2-onnx",
        format="onnx",
        quantization=artifact.quantization,
        architecture=source.arch,
        parameters=source.parameter_count(),
        context_length=source.context_length,
        model_file=artifact.model_file,
        memory=MemoryEstimate(artifact.weight_bytes, source.kv_bytes_per_token(artifact.kv_bytes_per_element)),
        files={
            name: FileEntry(file_sha256(artifact.path / name), (artifact.path / name).stat().st_size)
            for name in artifact.files
        },
        tensor_types=artifact.tensor_types,
        evaluation=artifact.evaluation(),
        extra=artifact.manifest_extra(),
    )
    manifest.validate()

    again = Manifest.from_json(manifest.to_json())

    assert again.extra["onnx"]["io"]["kv_cache"]["past_key"] == "past_key_values.{layer}.key"
    assert again.evaluation["numerical_check"]["max_abs_logit_diff"] < 1e-3


def test_write_onnx_fills_an_existing_folder_with_the_model_files_only(tmp_path, tiny_sources) -> None:
    from export.onnx import write_onnx
    from export.source import SourceModel

    steps: list[str] = []
    artifact = write_onnx(SourceModel.open(tiny_sources["llama"]), tmp_path, "fp32", on_step=steps.append)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(artifact.files) == ["config.json", "model.onnx"]
    assert steps == ["load", "export", "check", "quantize", "measure"]
