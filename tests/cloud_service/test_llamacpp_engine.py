"""The llama.cpp replica engine on a real GGUF bundle (the toy llama, exported and signed by the suite): the
device's tokens exactly, alone and batched, prefix reuse, the vocabulary the device names, a continuation from
the device's token ids, and the engine behind a real replica server from its config."""

from __future__ import annotations

import asyncio

import pytest

from cloud_service.engines.llamacpp import LlamaCppEngine, LlamaCppEngineOptions
from edge_runtime import (
    EngineOptions,
    GenerationRequest,
    Message,
    ModelLoadError,
    PrefixTokens,
    SamplingParams,
    collect,
    load_bundle,
)
from edge_runtime.errors import InvalidRequestError

CONTEXT = 512
PROMPTS = [f"Question {i}: what comes after {i}?" + " and then" * (i % 3) for i in range(8)]


def _request(text: str, tokens: int = 24, **fields) -> GenerationRequest:
    return GenerationRequest(messages=[Message("user", text)],
                             sampling=SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True), **fields)


@pytest.fixture(scope="module")
def bundle(bundles):
    return bundles("llama", "gguf", "f32")


@pytest.fixture(scope="module")
def pair(bundle, trusted):
    device = load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(context_length=CONTEXT, lazy=False))
    replica = LlamaCppEngine(bundle, options=LlamaCppEngineOptions(context_length=CONTEXT, max_running=8))
    yield device, replica
    device.close()
    replica.close()


def test_alone_and_batched_the_replica_gives_the_devices_greedy_tokens(pair):
    device, replica = pair
    assert replica.info.vocabulary == device.info.vocabulary != ""

    async def run():
        on_device = [await collect(device.generate(_request(p))) for p in PROMPTS]
        alone = [await collect(replica.generate(_request(p))) for p in PROMPTS]
        batched = await asyncio.gather(*(collect(replica.generate(_request(p))) for p in PROMPTS))
        return on_device, alone, batched

    on_device, alone, batched = asyncio.run(run())
    assert [a.token_ids for a in alone] == [d.token_ids for d in on_device]
    assert [a.text for a in alone] == [d.text for d in on_device]
    assert [b.token_ids for b in batched] == [d.token_ids for d in on_device]


def test_a_prompt_sharing_a_cached_prefix_prefills_only_the_rest(pair):
    _, replica = pair

    async def run():
        first = await collect(replica.generate(_request(PROMPTS[0], 4)))
        again = await collect(replica.generate(_request(PROMPTS[0], 4)))
        return first, again

    first, again = asyncio.run(run())
    assert again.token_ids == first.token_ids
    assert again.usage.cached_tokens >= again.usage.prompt_tokens - 1 > 0


def test_the_replica_continues_a_device_answer_from_its_token_ids_exactly(pair):
    device, replica = pair

    async def run():
        events = [e async for e in device.generate(_request(PROMPTS[1], 24))]
        whole = [e.token_id for e in events]
        head_ids, head_text = whole[:10], "".join(e.text for e in events[:10])
        rest = await collect(replica.generate(_request(
            PROMPTS[1], 14, assistant_prefix=head_text,
            prefix_tokens=PrefixTokens(replica.info.vocabulary, tuple(head_ids), head_text))))
        return whole, rest

    whole, rest = asyncio.run(run())
    assert tuple(whole[10:]) == rest.token_ids


def test_more_requests_than_slots_wait_their_turn_and_each_gets_its_own_answer(pair, bundle):
    _, roomy = pair
    tight = LlamaCppEngine(bundle, options=LlamaCppEngineOptions(context_length=CONTEXT, max_running=2))

    async def run():
        expected = [await collect(roomy.generate(_request(p, tokens=8))) for p in PROMPTS]
        tasks = [asyncio.ensure_future(collect(tight.generate(_request(p, tokens=8)))) for p in PROMPTS]
        seen = (0, 0)
        while not all(task.done() for task in tasks):  # bounded by the tasks' own end
            seen = max(seen, (tight.running, tight.waiting))
            await asyncio.sleep(0.001)
        return expected, [task.result() for task in tasks], seen

    try:
        expected, answers, (running, waiting) = asyncio.run(asyncio.wait_for(run(), 120))
    finally:
        tight.close()
    assert [a.token_ids for a in answers] == [e.token_ids for e in expected]
    assert running == 2 and waiting >= 1  # two slots busy, the rest queued: never more rows than slots


def test_load_figures_and_refusals(pair, bundle, tmp_path):
    _, replica = pair
    assert replica.max_running == 8 and replica.running == 0 and replica.waiting == 0
    assert replica.prompt_tokens(_request(PROMPTS[0])) > 5
    with pytest.raises(ModelLoadError, match="neither"):
        LlamaCppEngine(tmp_path / "missing.gguf")
    with pytest.raises(InvalidRequestError, match="batch_tokens"):
        LlamaCppEngineOptions(max_running=16, batch_tokens=8)


def test_a_replica_server_serves_a_gguf_bundle_from_its_config(bundle):
    from cloud_service.client import CloudClient
    from cloud_service.config import FrontDoorConfig, ModelConfig, ServerConfig
    from cloud_service.server import ReplicaServer

    async def main():
        server = ReplicaServer(ServerConfig(
            models=(ModelConfig("toy", bundle, engine="llamacpp", version="q",
                                engine_options={"context_length": CONTEXT, "max_running": 4}),),
            front_door=FrontDoorConfig(host="127.0.0.1", port=0, allow_unauthenticated=True)))
        port = await server.start()
        try:
            async with CloudClient(f"127.0.0.1:{port}") as cloud:
                answers = await asyncio.gather(*(collect(cloud.generate(_request(p, 8), model="toy"))
                                                 for p in PROMPTS[:4]))
                models, load = await cloud.list_models(), await cloud.get_load()
        finally:
            await server.stop(0.1)
        return answers, models, load

    answers, models, load = asyncio.run(main())
    assert all(a.usage.completion_tokens == 8 for a in answers)
    assert models[0].engine == "llamacpp" and load.max_running == 4 and load.running == 0
