"""The GGUF decoder drives llama_decode itself: prompts longer than one batch go in chunks, a new prompt reuses
the KV cache of the prefix it shares with the previous sequence (and only that), and a failed decode empties
the cache so that the next prompt starts cleanly. Checked against the source model's logits on the f32 bundle."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.backends import gguf
from edge_runtime.backends.options import DecoderOptions
from edge_runtime.errors import GenerationError
from tests.edge_runtime.conftest import log_softmax, source_logits

BATCH = 64
"""The decoder's largest llama.cpp batch in these tests, so that a 200-token prompt goes in four chunks."""
CLOSE = 0.05  # nats: llama.cpp keeps its KV cache in f16 even for f32 weights (as in test_engine_greedy)


@pytest.fixture(scope="module")
def model_and_decoder(bundles, source_models):
    model, tokenizer = source_models("llama")
    bundle = bundles("llama", "gguf", "f32")
    patch = pytest.MonkeyPatch()
    patch.setattr(gguf, "MAX_BATCH", BATCH)
    try:
        decoder = gguf.LlamaCppDecoder(bundle / "model.gguf", DecoderOptions(512, 2), frozenset())
    finally:
        patch.undo()
    yield model, tokenizer, decoder
    decoder.close()


@pytest.fixture(scope="module")
def long_prompt(model_and_decoder, eval_text) -> list[int]:
    _, _, decoder = model_and_decoder
    ids = decoder.tokenize(eval_text, add_special=True)[:200]
    assert len(ids) == 200
    return ids


def _close_to_source(model, ids: list[int], logits: np.ndarray) -> None:
    expected = log_softmax(source_logits(model, ids)[-1])
    assert int(logits.argmax()) == int(expected.argmax())
    assert np.abs(log_softmax(logits) - expected).max() < CLOSE


def test_a_prompt_longer_than_one_batch_prefills_in_chunks_and_decodes_like_the_source(model_and_decoder, long_prompt):
    model, _, decoder = model_and_decoder
    assert decoder._n_batch == BATCH
    logits, cached = decoder.prefill(long_prompt)
    assert cached == 0
    _close_to_source(model, long_prompt, logits)
    sequence = list(long_prompt)
    for _ in range(3):
        sequence.append(int(logits.argmax()))
        logits = decoder.decode_one_token(sequence[-1])
        _close_to_source(model, sequence, logits)


def test_a_new_prompt_reuses_exactly_the_shared_prefix(model_and_decoder, long_prompt):
    model, _, decoder = model_and_decoder
    decoder.prefill(long_prompt)
    branch = long_prompt[:150] + long_prompt[10:40]  # shares 150 tokens, then differs
    logits, cached = decoder.prefill(branch)
    assert cached == 150
    _close_to_source(model, branch, logits)
    again, cached = decoder.prefill(branch)  # the same prompt: all but its last token come from the cache
    assert cached == len(branch) - 1
    _close_to_source(model, branch, again)
    shorter = branch[:90]  # a prefix of the cached sequence: the cache is cut back to it
    logits, cached = decoder.prefill(shorter)
    assert cached == 89
    _close_to_source(model, shorter, logits)


def test_a_failed_decode_raises_and_the_next_prompt_starts_from_an_empty_cache(model_and_decoder, long_prompt):
    model, _, decoder = model_and_decoder
    decoder.prefill(long_prompt[:50])
    with pytest.raises(GenerationError, match="llama.cpp failed to decode 1 token"):
        decoder.decode_one_token(decoder.n_vocab + 5)  # no such token: llama.cpp refuses the batch
    logits, cached = decoder.prefill(long_prompt[:60])
    assert cached == 0
    _close_to_source(model, long_prompt[:60], logits)
