"""The engine's stream contract on both backends: streaming equals non-streaming, continuation from an
assistant prefix yields exactly the rest, stop sequences, cancellation and abort free the engine, and
concurrent callers are served first come, first served."""

from __future__ import annotations

import asyncio

import pytest

from edge_runtime import (
    EngineBusyError,
    FinishReason,
    GenerationRequest,
    Message,
    SamplingParams,
    collect,
    load_bundle,
)
from edge_runtime.loading import EngineOptions
from tests.edge_runtime.conftest import PROMPT_MESSAGES, source_greedy

BACKENDS = [("gguf", "f32"), ("onnx", "fp32")]
MESSAGES = [Message(role, text) for role, text in PROMPT_MESSAGES]


def _greedy(max_tokens: int = 24, **fields) -> GenerationRequest:
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                              stop=fields.pop("stop", ()))
    return GenerationRequest(messages=fields.pop("messages", MESSAGES), sampling=sampling, **fields)


@pytest.fixture
def family() -> str:
    return "llama"


@pytest.fixture(params=BACKENDS, ids=lambda p: p[0])
def engine(request, bundles, trusted, family):
    fmt, quantization = request.param
    bundle = bundles(family, fmt, quantization)
    engine = load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(max_waiting=4))
    yield engine
    engine.close()


async def _events(engine, request):
    return [event async for event in engine.generate(request)]


def test_streaming_yields_what_collecting_yields_and_every_token_has_a_logprob(engine):
    async def run():
        events = await _events(engine, _greedy())
        completion = await collect(engine.generate(_greedy()))
        return events, completion

    events, completion = asyncio.run(run())
    assert "".join(e.text for e in events) == completion.text
    assert [e.token_id for e in events] == list(completion.token_ids)
    assert all(e.logprob is not None and e.logprob <= 0 for e in events)
    assert all(e.finish_reason is None and e.usage is None for e in events[:-1])
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert events[-1].usage.completion_tokens == len(events) == 24


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
@pytest.mark.parametrize("cut", [1, 7, 18, 31])
def test_continuation_from_an_assistant_prefix_yields_exactly_the_rest(engine, source_models, family, cut):
    """The prefix is cut at arbitrary characters (mid-word too) of an earlier answer; the output must be
    what the source model writes after that exact text, decoded without repeating or dropping a character
    (SentencePiece's leading space included)."""
    model, tokenizer = source_models(family)
    answer = asyncio.run(collect(engine.generate(_greedy(40)))).text
    prefix = answer[:cut]
    continued = asyncio.run(collect(engine.generate(_greedy(12, assistant_prefix=prefix))))
    chat = [{"role": m.role, "content": m.content} for m in MESSAGES]
    prompt_text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + prefix
    prompt = tokenizer(prompt_text, add_special_tokens=False).input_ids
    expected_ids = source_greedy(model, prompt, 12)
    full = tokenizer.decode(prompt + expected_ids, skip_special_tokens=True)
    before = tokenizer.decode(prompt, skip_special_tokens=True)
    assert before.endswith(prefix)
    assert continued.usage.prompt_tokens == len(prompt)
    if "\ufffd" not in full:
        assert before + continued.text == full


def test_a_stop_sequence_ends_the_answer_before_it(engine):
    answer = asyncio.run(collect(engine.generate(_greedy(30)))).text
    stop = answer[10:13]
    completion = asyncio.run(collect(engine.generate(_greedy(30, stop=(stop,)))))
    assert completion.finish_reason is FinishReason.STOP
    assert completion.text == answer[: answer.index(stop)]


def test_leaving_a_stream_early_cancels_it_and_the_next_request_runs(engine):
    async def run():
        stream = engine.generate(_greedy(400))
        async for _ in stream:
            break
        await stream.aclose()
        assert engine.running == 0  # aclose returns once the model is free
        return await collect(engine.generate(_greedy(8)))

    completion = asyncio.run(run())
    assert completion.usage.completion_tokens == 8
    assert engine.running == 0 and engine.waiting == 0


def test_a_cancelled_task_cancels_its_request(engine):
    async def run():
        task = asyncio.create_task(collect(engine.generate(_greedy(400))))
        while not engine.running:  # cancel while the generation runs
            await asyncio.sleep(0.0005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await collect(engine.generate(_greedy(4)))

    assert asyncio.run(run()).usage.completion_tokens == 4


def test_abort_by_id_ends_the_running_stream_with_abort(engine):
    async def run():
        request = _greedy(400)
        events = []

        async def consume():
            async for event in engine.generate(request):
                events.append(event)
                if len(events) == 3:
                    assert await engine.abort(request.request_id)

        await consume()
        return events

    events = asyncio.run(run())
    assert events[-1].finish_reason is FinishReason.ABORT and events[-1].token_id is None
    assert 3 <= len(events) < 400


def test_abort_of_a_queued_request_and_of_an_unknown_id(engine):
    async def run():
        first, second = _greedy(400), _greedy(5)
        running = asyncio.create_task(collect(engine.generate(first)))
        while not engine.running:
            await asyncio.sleep(0.0005)
        queued = asyncio.create_task(_events(engine, second))
        await asyncio.sleep(0)  # submitted, waiting behind the first
        assert await engine.abort(second.request_id)
        assert not await engine.abort("no-such-request")
        return await running, await queued

    completion, queued_events = asyncio.run(run())
    assert completion.usage.completion_tokens == 400
    assert [e.finish_reason for e in queued_events] == [FinishReason.ABORT]


def test_concurrent_callers_are_served_in_arrival_order(engine):
    order: list[int] = []

    async def one(index: int):
        async for event in engine.generate(_greedy(6)):
            if event.finish_reason:
                order.append(index)

    async def run():
        tasks = []
        for index in range(4):
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(0)  # let each submit before the next
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert order == [0, 1, 2, 3]


def test_a_full_wait_queue_refuses_with_engine_busy_and_recovers(engine):
    async def run():
        tasks = [asyncio.create_task(collect(engine.generate(_greedy(300))))]
        while not engine.running:
            await asyncio.sleep(0.001)
        tasks += [asyncio.create_task(collect(engine.generate(_greedy(20)))) for _ in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(EngineBusyError, match="max_waiting=4"):
            await collect(engine.generate(_greedy(2)))
        results = await asyncio.gather(*tasks)
        return results, await collect(engine.generate(_greedy(2)))

    results, after = asyncio.run(run())
    assert [r.usage.completion_tokens for r in results] == [300] + [20] * 4
    assert after.usage.completion_tokens == 2


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_an_end_of_sequence_token_ends_the_stream_unless_ignored(bundles, trusted, signing_key, tmp_path, fmt):
    """The bundle's generation_config.json names the end-of-sequence ids: re-export a copy whose eos is the
    token the model picks first, and generation stops there (with its logprob, and no text)."""
    import json
    import shutil

    from edge_runtime.bundle import Manifest
    from export.bundle_writer import seal_bundle

    source = bundles("llama", fmt, "f32" if fmt == "gguf" else "fp32")
    with load_bundle(source, trusted_keys=trusted) as engine:
        first = asyncio.run(collect(engine.generate(_greedy(1)))).token_ids[0]
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps(config | {"eos_token_id": [first]}))
    seal_bundle(copy, Manifest.from_json((copy / "manifest.json").read_bytes()), signing_key)
    with load_bundle(copy, trusted_keys=trusted) as engine:
        stopped = asyncio.run(collect(engine.generate(GenerationRequest(
            messages=MESSAGES, sampling=SamplingParams(temperature=0.0, max_tokens=10)))))
        ignored = asyncio.run(collect(engine.generate(_greedy(10))))
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.token_ids == (first,) and stopped.text == "" and stopped.logprobs[0] < 0
    assert ignored.finish_reason is FinishReason.LENGTH and ignored.usage.completion_tokens == 10


def test_closing_the_engine_fails_waiting_requests_and_stops_the_running_one(engine):
    from edge_runtime import EngineClosedError

    async def run():
        running = asyncio.create_task(_events(engine, _greedy(400)))
        while not engine.running:
            await asyncio.sleep(0.001)
        waiting = asyncio.create_task(_events(engine, _greedy(4)))
        await asyncio.sleep(0)
        await asyncio.to_thread(engine.close)
        with pytest.raises(EngineClosedError, match="closed before this request ran"):
            await waiting
        with pytest.raises(EngineClosedError, match="closed during this request"):
            await running

    asyncio.run(run())
