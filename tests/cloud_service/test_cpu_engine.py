"""The CPU batching engine: concurrent streams share decode steps yet each equals its solo run; cancel,
abort and limits behave like the edge engines'."""

from __future__ import annotations

import asyncio
import time

import pytest

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


@pytest.fixture(scope="module")
def engines(tiny_llama, tiny_qwen2, tiny_mistral):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    made = {}

    def get(family: str, **options):
        key = (family, tuple(sorted(options.items())))
        if key not in made:
            folder = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}[family]
            made[key] = CpuEngine(folder, options=CpuEngineOptions(**options))
        return made[key]

    yield get
    for engine in made.values():
        engine.close()


def _request(index: int, tokens: int = 20, **sampling) -> GenerationRequest:
    sampling = {"temperature": 0.0, "max_tokens": tokens, "ignore_eos": True} | sampling
    return GenerationRequest(
        messages=[Message("user", f"Question {index}: " + "why " * (index % 7))], sampling=SamplingParams(**sampling)
    )


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_32_concurrent_streams_each_equal_their_solo_run(engines, family):
    engine = engines(family, max_running=16)

    async def run():
        solo = [await collect(engine.generate(_request(i))) for i in range(32)]
        together = await asyncio.gather(*(collect(engine.generate(_request(i))) for i in range(32)))
        return solo, together

    solo, together = asyncio.run(run())
    assert [c.token_ids for c in together] == [c.token_ids for c in solo]
    assert [c.text for c in together] == [c.text for c in solo]
    assert all(c.usage.completion_tokens == 20 for c in together)


def test_sampled_streams_are_reproducible_under_batching(engines):
    engine = engines("llama", max_running=16)

    async def run():
        solo = [await collect(engine.generate(_request(i, temperature=0.8, seed=i))) for i in range(8)]
        together = await asyncio.gather(
            *(collect(engine.generate(_request(i, temperature=0.8, seed=i))) for i in range(8))
        )
        return solo, together

    solo, together = asyncio.run(run())
    assert [c.token_ids for c in together] == [c.token_ids for c in solo]


def test_streams_share_decode_steps(engines):
    """With 8 streams in flight the engine runs them as one batch, not one after another."""
    engine = engines("llama", max_running=16)
    seen = []

    async def one(i):
        async for event in engine.generate(_request(i, 30)):
            seen.append(engine.running)
            del event

    async def run():
        await asyncio.gather(*(one(i) for i in range(8)))

    asyncio.run(run())
    assert max(seen) >= 4


def test_requests_arriving_apart_on_an_idle_engine_are_gathered_and_each_equals_its_solo_run(engines):
    gather_s = 0.03
    engine = engines("llama", max_running=16, gather_s=gather_s)

    async def staggered(i):
        await asyncio.sleep(0.005 * i)
        return await collect(engine.generate(_request(i)))

    async def run():
        started = time.perf_counter()
        lone = await collect(engine.generate(_request(0)))
        waited = time.perf_counter() - started
        solo = [lone] + [await collect(engine.generate(_request(i))) for i in range(1, 6)]
        together = await asyncio.gather(*(staggered(i) for i in range(6)))
        return waited, solo, together

    waited, solo, together = asyncio.run(run())
    assert waited >= gather_s  # the idle engine waited for company before its prefill
    assert [c.token_ids for c in together] == [c.token_ids for c in solo]


@pytest.mark.parametrize("value", [-0.001, 1.0, "0.01"])
def test_gather_time_is_checked(value):
    from cloud_service.engines.cpu import CpuEngineOptions

    with pytest.raises(InvalidRequestError, match="gather_s"):
        CpuEngineOptions(gather_s=value)


def test_leaving_a_stream_frees_its_row_and_abort_ends_with_abort(engines):
    engine = engines("llama", max_running=16)

    async def run():
        stream = engine.generate(_request(0, 400))
        async for _ in stream:
            break
        await stream.aclose()
        assert engine.running == 0
        request = _request(1, 400)
        events = []
        async for event in engine.generate(request):
            events.append(event)
            if len(events) == 2:
                assert await engine.abort(request.request_id)
        return events

    events = asyncio.run(run())
    assert events[-1].finish_reason is FinishReason.ABORT and len(events) < 400
    assert engine.running == 0


def test_limits_and_bad_input_are_typed_errors_and_the_engine_goes_on(engines):
    engine = engines("llama", max_running=1, max_waiting=1, context_length=64)

    async def run():
        with pytest.raises(PromptTooLongError):
            await collect(engine.generate(GenerationRequest(prompt="word " * 100)))
        first = asyncio.create_task(collect(engine.generate(_request(0, 300))))
        while not engine.running:
            await asyncio.sleep(0.001)
        second = asyncio.create_task(collect(engine.generate(_request(1, 5))))
        await asyncio.sleep(0)
        with pytest.raises(EngineBusyError, match="max_waiting=1"):
            await collect(engine.generate(_request(2, 5)))
        return await first, await second

    first, second = asyncio.run(run())
    assert first.finish_reason is FinishReason.LENGTH  # stopped by the 64-token context
    assert first.usage.prompt_tokens + first.usage.completion_tokens == 64
    assert second.usage.completion_tokens == 5


def test_close_fails_running_and_waiting_streams(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    engine = CpuEngine(tiny_llama, options=CpuEngineOptions(max_running=1))

    async def run():
        running = asyncio.create_task(collect(engine.generate(_request(0, 400))))
        while not engine.running:
            await asyncio.sleep(0.001)
        waiting = asyncio.create_task(collect(engine.generate(_request(1, 4))))
        await asyncio.sleep(0)
        await asyncio.to_thread(engine.close)
        for task in (running, waiting):
            with pytest.raises(EngineClosedError):
                await task
        with pytest.raises(EngineClosedError):
            await collect(engine.generate(_request(2, 4)))

    asyncio.run(run())
