"""Continuing from token ids: an engine whose vocabulary matches feeds ``prefix_tokens`` as given, so a greedy
answer split at any token and continued equals the uninterrupted answer; other engines use the text."""

from __future__ import annotations

import pytest

from edge_runtime import GenerationRequest, Message, PrefixTokens, SamplingParams, load_bundle
from edge_runtime.errors import InvalidRequestError
from edge_runtime.generation import prompt_ids
from edge_runtime.sync import SyncEngine
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer, vocabulary_fingerprint

QUESTION = (Message("user", "Tell me about the river"),)
TOKENS = 24


def _request(prefix: str = "", tokens: PrefixTokens | None = None, max_tokens: int = TOKENS) -> GenerationRequest:
    return GenerationRequest(messages=QUESTION, assistant_prefix=prefix, prefix_tokens=tokens,
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))


def test_fingerprints_name_the_id_mapping_not_the_file() -> None:
    assert vocabulary_fingerprint({"a": 0, "b": 1}) == vocabulary_fingerprint({"b": 1, "a": 0})
    assert vocabulary_fingerprint({"a": 0, "b": 1}) != vocabulary_fingerprint({"a": 1, "b": 0})


def test_prefix_tokens_must_end_the_prefix_and_be_ids() -> None:
    with pytest.raises(InvalidRequestError, match="^prefix_tokens.text must be the end of assistant_prefix"):
        _request("Hello", PrefixTokens("v", (1, 2), "world"))
    with pytest.raises(InvalidRequestError, match="non-negative token ids"):
        PrefixTokens("v", (), "")
    with pytest.raises(InvalidRequestError, match="fingerprint"):
        PrefixTokens("", (1,), "x")


@pytest.mark.parametrize(("fmt", "quantization"), [("gguf", "f32"), ("onnx", "fp32")])
def test_a_continuation_from_ids_equals_the_uninterrupted_answer(bundles, trusted, fmt: str,
                                                                 quantization: str) -> None:
    folder = bundles("llama", fmt, quantization)
    engine = SyncEngine(load_bundle(folder, trusted_keys=trusted))
    try:
        vocabulary = engine.info.vocabulary
        assert vocabulary == BundleTokenizer(folder / TOKENIZER_FILE).vocabulary
        whole = list(engine.generate(_request()))
        ids = [event.token_id for event in whole]
        for cut in range(1, TOKENS):
            if not whole[cut - 1].text:
                continue  # a cut inside a character: the SDK generates such tokens again (Delivered.rewind)
            head = "".join(event.text for event in whole[:cut])
            rest = engine.complete(_request(head, PrefixTokens(vocabulary, tuple(ids[:cut]), head), TOKENS - cut))
            assert [e.token_id for e in whole[cut:]] == list(rest.token_ids), cut
            assert head + rest.text == "".join(event.text for event in whole)
    finally:
        engine.close()


def test_ids_of_another_vocabulary_fall_back_to_the_text(bundles) -> None:
    tokenizer = BundleTokenizer(bundles("llama", "gguf", "f32") / TOKENIZER_FILE)
    text_only = prompt_ids(tokenizer, _request("The river"), _template(bundles))
    foreign = prompt_ids(tokenizer, _request("The river", PrefixTokens("another-vocabulary", (7, 7, 7), "river")),
                         _template(bundles))
    matching = prompt_ids(tokenizer, _request("The river", PrefixTokens(tokenizer.vocabulary, (7, 7, 7), "river")),
                          _template(bundles))
    assert foreign == text_only
    assert matching[-3:] == [7, 7, 7] and matching[:-3] == prompt_ids(tokenizer, _request("The "), _template(bundles))


def _template(bundles):
    from edge_runtime.chat import TokenizerFacts, load_chat_template

    folder = bundles("llama", "gguf", "f32")
    return load_chat_template(folder, None, TokenizerFacts.read(folder))
