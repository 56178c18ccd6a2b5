"""(c) The cloud tier on the real model: a replica on loopback with the CPU engine over the Hugging Face
folder, streaming a chat answer through the real client."""

from __future__ import annotations

import asyncio

import pytest

from cloud_service.client import CloudClient
from edge_runtime import GenerationRequest, Message, SamplingParams
from tests.real_model.conftest import STORY
from tests.real_model.support import agreement, english
from tests.sdk.conftest import API_KEY, MODEL, replica

pytestmark = pytest.mark.slow

TOKENS = 48


def test_a_replica_streams_an_english_answer_token_by_token(real_model, real_cloud_engine, real_reference):
    request = GenerationRequest(messages=[Message(**m) for m in STORY],
                                sampling=SamplingParams(temperature=0.0, max_tokens=TOKENS))

    async def main():
        async with replica(real_model.path, real_cloud_engine) as server, \
                CloudClient(server.target, api_key=API_KEY) as cloud:
            return [event async for event in cloud.generate(request, model=MODEL)]

    events = asyncio.run(main())
    assert len(events) == TOKENS and events[-1].finish_reason == "length"
    text = "".join(event.text for event in events)
    assert english(text) and sum(bool(event.text) for event in events) > TOKENS // 2, text
    tokenizer, model = real_reference
    prompt = tokenizer.apply_chat_template(STORY, add_generation_prompt=True)
    assert events[-1].usage.prompt_tokens == len(prompt)
    fit = agreement(model, prompt, [e.token_id for e in events], [e.logprob for e in events])
    assert fit.top1 >= 0.98 and fit.mean_logprob_gap < 0.01, fit  # the same float32 weights, batched
