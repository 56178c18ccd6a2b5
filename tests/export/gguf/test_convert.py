"""Our GGUF converter: llama.cpp loads the result and behaves exactly like the source model."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from export.errors import ConversionError, UnsupportedArchitectureError
from export.gguf.convert import convert_to_gguf, interleave_rotary_rows
from export.gguf.runner import GgufScorer
from export.quality import CHECK_PROMPTS, hf_logits
from export.source import SourceModel

TEXTS = ["Hello, world!", "12345 + 678 = 13023", "def f(x):\n    return x * 2\n", "café Zürich 日本語 😀 →"]


@pytest.fixture(params=["llama", "qwen2", "mistral"])
def source(request: pytest.FixtureRequest) -> SourceModel:
    return SourceModel.open(request.getfixturevalue(f"tiny_{request.param}"))


@pytest.fixture
def f32_gguf(source: SourceModel, tmp_path: Path) -> Path:
    return convert_to_gguf(source, tmp_path / "model.gguf", "f32")


def test_f32_logits_match_the_source_model(source: SourceModel, f32_gguf: Path) -> None:
    model, tokenizer = source.load_model(), source.load_tokenizer()
    with GgufScorer(f32_gguf, n_ctx=64, f32_cache=True) as scorer:
        for prompt in CHECK_PROMPTS:
            ids = tokenizer.encode(prompt)
            np.testing.assert_allclose(scorer.logits(ids), hf_logits(model, ids), atol=1e-4)


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_greedy_decoding_in_llama_cpp_equals_transformers(source: SourceModel, tmp_path: Path, outtype: str) -> None:
    from llama_cpp import Llama

    model, tokenizer = source.load_model(), source.load_tokenizer()
    path = convert_to_gguf(source, tmp_path / "model.gguf", outtype)
    messages = [{"role": "user", "content": "What does the device do?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    expected = model.generate(
        input_ids=__import__("torch").tensor([ids]), max_new_tokens=16, do_sample=False, min_new_tokens=16,
        pad_token_id=tokenizer.pad_token_id,
    )[0, len(ids):].tolist()
    llm = Llama(model_path=str(path), n_ctx=128, verbose=False)
    try:
        produced = [token for _, token in zip(range(16), llm.generate(ids, temp=0.0, top_k=1), strict=False)]
    finally:
        llm.close()
    assert produced == expected


def test_llama_cpp_tokenizes_like_the_source_tokenizer(source: SourceModel, f32_gguf: Path) -> None:
    tokenizer = source.load_tokenizer()
    with GgufScorer(f32_gguf, n_ctx=64) as scorer:
        for text in TEXTS:
            assert scorer.tokenize(text, add_special=True) == tokenizer.encode(text)
            assert scorer.tokenize(text) == tokenizer.encode(text, add_special_tokens=False)


def test_chat_template_and_special_tokens_are_embedded(source: SourceModel, f32_gguf: Path) -> None:
    tokenizer = source.load_tokenizer()
    fields = gguf.GGUFReader(f32_gguf).fields

    def value(key: str):
        field = fields[key]
        return field.contents()

    assert value("tokenizer.chat_template") == tokenizer.chat_template
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert value("tokenizer.ggml.add_bos_token") is (tokenizer.bos_token is not None)
    assert value("tokenizer.ggml.pre") == {"llama": "llama-bpe", "qwen2": "qwen2", "mistral": "default"}[source.arch]
    assert value("tokenizer.ggml.model") == ("llama" if source.arch == "mistral" else "gpt2")
    assert len(value("tokenizer.ggml.tokens")) == source.config["vocab_size"]


def test_rotary_rows_are_interleaved_per_head() -> None:
    heads, head_dim = 2, 4
    rows = np.arange(heads * head_dim)  # HF: per head, first halves then second halves
    assert interleave_rotary_rows(rows, heads).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_unsupported_architecture_lists_the_supported_ones(tiny_llama: Path, tmp_path: Path) -> None:
    source = SourceModel.open(tiny_llama)
    gpt2 = SourceModel(path=source.path, config={**source.config, "model_type": "gpt2"})
    with pytest.raises(UnsupportedArchitectureError, match="supported: llama, mistral, qwen2"):
        convert_to_gguf(gpt2, tmp_path / "x.gguf")


def test_a_tokenizer_llama_cpp_cannot_split_like_is_refused(tiny_qwen2: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for path in tiny_qwen2.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="split pattern is not one llama.cpp knows"):
        convert_to_gguf(SourceModel.open(folder), tmp_path / "x.gguf")
