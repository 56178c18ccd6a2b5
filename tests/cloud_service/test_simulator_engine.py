"""The load simulator engine: deterministic filler, a prefix cache that remembers prompts and answers, batching
and queueing within max_running, abort, cancel, close and option checks; and `engine = "simulator"` in a
replica's config."""

from __future__ import annotations

import asyncio

import pytest

from cloud_service.config import load_config
from cloud_service.engines.simulator import (
    BLOCK_TOKENS,
    CHARS_PER_TOKEN,
    SimulatorEngine,
    SimulatorOptions,
    render,
)
from cloud_service.server import build_engine
from edge_runtime import (
    EngineBusyError,
    EngineClosedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    Message,
    PromptTooLongError,
    SamplingParams,
    collect,
)

FAST = SimulatorOptions(max_running=2, decode_step_s=0.001, decode_s_per_sequence=0.0, prefill_s_per_token=0.0)


def _request(system: str, user: str = "hi", tokens: int = 8, history: tuple[Message, ...] = ()) -> GenerationRequest:
    return GenerationRequest(messages=[Message("system", system), *history, Message("user", user)],
                             sampling=SamplingParams(max_tokens=tokens))


def test_answers_are_deterministic_filler_with_usage():
    async def main():
        engine = SimulatorEngine(options=FAST)
        request = _request("be brief", tokens=12)
        first, second = await collect(engine.generate(request)), await collect(engine.generate(request))
        engine.close()
        return engine, request, first, second

    engine, request, first, second = asyncio.run(main())
    assert first.token_ids == second.token_ids and first.text == second.text
    assert len(first.token_ids) == 12 and len(first.text) == 12 * CHARS_PER_TOKEN
    assert first.finish_reason is FinishReason.LENGTH
    assert first.usage.prompt_tokens == engine.prompt_tokens(request) == -(-len(render(request)) // CHARS_PER_TOKEN)


def test_the_prefix_cache_serves_shared_prompts_and_the_history_of_a_conversation():
    system = "You are a careful assistant. " * 40  # ~290 tokens

    async def main():
        engine = SimulatorEngine(options=FAST)
        cold = await collect(engine.generate(_request(system, "first")))
        shared = await collect(engine.generate(_request(system, "second")))
        other = await collect(engine.generate(_request("Something else entirely. " * 40)))
        follow_up = await collect(engine.generate(_request(system, "next", history=(
            Message("user", "first"), Message("assistant", cold.text)))))
        off = SimulatorEngine(options=SimulatorOptions(prefix_cache_tokens=0, decode_step_s=0.001))
        await collect(off.generate(_request(system)))
        uncached = await collect(off.generate(_request(system)))
        return cold, shared, other, follow_up, uncached

    cold, shared, other, follow_up, uncached = asyncio.run(main())
    assert cold.usage.cached_tokens == 0 and other.usage.cached_tokens == 0
    assert shared.usage.cached_tokens >= cold.usage.prompt_tokens - 2 * BLOCK_TOKENS  # the system prompt
    # the previous turn's prompt *and answer* are cached: only the new user turn is computed
    assert follow_up.usage.cached_tokens >= cold.usage.prompt_tokens + len(cold.token_ids) - 2 * BLOCK_TOKENS
    assert uncached.usage.cached_tokens == 0


def test_batches_up_to_max_running_and_queues_the_rest():
    async def main():
        engine = SimulatorEngine(options=FAST)
        streams = [asyncio.create_task(collect(engine.generate(_request(f"s{i}", tokens=50)))) for i in range(5)]
        await asyncio.sleep(0.02)
        seen = (engine.running, engine.waiting, engine.cache_usage, engine.max_running)
        done = await asyncio.gather(*streams)
        return seen, done, (engine.running, engine.waiting, engine.cache_usage)

    (running, waiting, usage, max_running), done, after = asyncio.run(main())
    assert (running, waiting, max_running) == (2, 3, 2) and usage > 0
    assert all(c.usage.completion_tokens == 50 for c in done)
    assert after == (0, 0, 0.0)


def test_abort_cancel_busy_and_close():
    async def main():
        engine = SimulatorEngine(options=SimulatorOptions(max_running=1, max_waiting=1, decode_step_s=0.002))
        running = _request("running", tokens=1000)
        queued = _request("queued", tokens=1000)
        first = asyncio.create_task(collect(engine.generate(running)))
        await asyncio.sleep(0.01)  # admitted: the queue is empty again
        second = asyncio.create_task(collect(engine.generate(queued)))
        await asyncio.sleep(0.02)
        with pytest.raises(EngineBusyError, match="max_waiting=1"):
            await collect(engine.generate(_request("one too many")))
        assert await engine.abort(queued.request_id) and await engine.abort(running.request_id)
        assert not await engine.abort("no-such-id")
        aborted = await asyncio.gather(first, second)
        stream = engine.generate(_request("left early", tokens=1000))
        async for _ in stream:
            break
        await stream.aclose()
        await asyncio.sleep(0.01)
        freed = engine.running
        last = asyncio.create_task(collect(engine.generate(_request("closed under", tokens=1000))))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(engine.close)  # from another thread, as a replica's stop() does
        with pytest.raises(EngineClosedError):
            await last
        with pytest.raises(EngineClosedError):
            await collect(engine.generate(_request("after")))
        return aborted, freed

    aborted, freed = asyncio.run(main())
    assert [c.finish_reason for c in aborted] == [FinishReason.ABORT, FinishReason.ABORT]
    assert aborted[1].usage.completion_tokens == 0 and aborted[0].usage.completion_tokens < 1000
    assert freed == 0


def test_options_and_prompt_length_are_checked():
    with pytest.raises(InvalidRequestError, match="unknown simulator option"):
        SimulatorOptions.from_table({"max_runing": 4})
    with pytest.raises(InvalidRequestError, match="decode_step_s must be a number"):
        SimulatorOptions(decode_step_s=-1)
    with pytest.raises(InvalidRequestError, match="kv_capacity_tokens"):
        SimulatorOptions(kv_capacity_tokens=100, context_length=1000)

    async def main():
        engine = SimulatorEngine(options=SimulatorOptions(context_length=64, kv_capacity_tokens=64))
        with pytest.raises(PromptTooLongError):
            await collect(engine.generate(_request("x" * 400)))

    asyncio.run(main())


def test_a_replica_config_can_ask_for_the_simulator_without_a_model_path(tmp_path):
    path = tmp_path / "replica.toml"
    path.write_text('[server]\nallow_unauthenticated = true\n[[models]]\nname = "sim"\nengine = "simulator"\n'
                    '[models.simulator]\nmax_running = 3\n')
    config = load_config(path)
    engine = build_engine(config.models[0])
    assert isinstance(engine, SimulatorEngine) and engine.max_running == 3 and engine.info.backend == "simulator"
    path.write_text('[server]\nallow_unauthenticated = true\n[[models]]\nname = "m"\nengine = "cpu"\n')
    with pytest.raises(Exception, match=r"models\[0\].path is required"):
        load_config(path)
