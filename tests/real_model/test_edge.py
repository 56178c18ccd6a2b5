"""(b) The edge runtime on the real model's bundle: a chat answered in English, and close to the float32
reference: teacher-forced token agreement (near-ties allowed) and next-token KL of the bundle's GGUF."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge_runtime import EngineOptions, GenerationRequest, Message, SamplingParams, collect, load_bundle
from tests.real_model.conftest import CHAT, CONTEXT, STORY
from tests.real_model.support import agreement, english, log_softmax, reference_log_probs

pytestmark = pytest.mark.slow

TOKENS = 48


@pytest.fixture(scope="module")
def device(real_bundle, trusted):
    engine = load_bundle(real_bundle.path, trusted_keys=trusted,
                         options=EngineOptions(context_length=CONTEXT, lazy=False))
    yield engine
    engine.close()


def _chat(messages, tokens: int = TOKENS) -> GenerationRequest:
    return GenerationRequest(messages=[Message(**m) for m in messages],
                             sampling=SamplingParams(temperature=0.0, max_tokens=tokens))


@pytest.mark.parametrize("messages", [CHAT, STORY], ids=["question", "story"])
def test_the_device_answers_in_english_close_to_the_reference(device, real_reference, messages):
    tokenizer, model = real_reference
    completion = asyncio.run(collect(device.generate(_chat(messages))))
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert completion.usage.prompt_tokens == len(prompt)  # the bundle formats and tokenizes as the source does
    assert english(completion.text), completion.text
    fit = agreement(model, prompt, completion.token_ids, completion.logprobs)
    assert fit.near >= 0.95 and fit.top1 >= 0.8, fit
    assert fit.mean_logprob_gap < 0.15, fit
    if messages is CHAT:
        assert "Paris" in completion.text


def test_the_bundle_gives_the_reference_next_token_distributions(real_bundle, real_reference):
    from llama_cpp import Llama

    from export.pretrained import reference_text

    tokenizer, model = real_reference
    ids = tokenizer.encode(reference_text(3000), add_special_tokens=False)[:256]
    ours = reference_log_probs(model, ids)
    llm = Llama(str(real_bundle.path / real_bundle.manifest.model_file), n_ctx=len(ids), n_batch=len(ids),
                logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        theirs = log_softmax(np.asarray(llm.scores[: len(ids)]))
    finally:
        llm.close()
    kl = (np.exp(ours) * (ours - theirs)).sum(axis=-1)
    agree = float((ours.argmax(axis=-1) == theirs.argmax(axis=-1)).mean())
    assert kl.mean() < 0.01 and np.quantile(kl, 0.99) < 0.1 and agree > 0.93, (kl.mean(), kl.max(), agree)
