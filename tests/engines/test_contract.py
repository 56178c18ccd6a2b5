"""The Engine contract (``edge_runtime/engine.py``, ``edge_runtime/types.py``), checked on every engine: gguf
and onnx bundles, the CPU batching engine, the load simulator and vLLM (GPU only). Where an engine documents a
difference, ``conftest.CAPABILITIES`` says so and the test skips with that reason."""

from __future__ import annotations

import asyncio

import pytest

from edge_runtime import (
    Engine,
    EngineClosedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    Message,
    PrefixTokens,
    PromptTooLongError,
    SamplingParams,
    TokenEvent,
)
from tests.engines.conftest import CONTEXT

MESSAGES = (Message("system", "You answer briefly."), Message("user", "The quick brown fox jumps over the lazy dog."))
TIMEOUT_S = 60
LONG = CONTEXT
"""max_tokens of a request meant to be still running when the test ends it (the context's room is less)."""


def greedy(max_tokens: int | None, **fields) -> GenerationRequest:
    """A greedy request on the shared prompt that ignores end-of-sequence (so lengths are predictable)."""
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, stop=fields.pop("stop", ()))
    return GenerationRequest(messages=fields.pop("messages", MESSAGES), sampling=sampling, **fields)


def stream(runner, engine, request: GenerationRequest) -> list[TokenEvent]:
    """Every event of the request's stream, within TIMEOUT_S."""
    async def events():
        return [event async for event in engine.generate(request)]

    return runner.run(asyncio.wait_for(events(), TIMEOUT_S))


def text(events: list[TokenEvent]) -> str:
    return "".join(event.text for event in events)


def test_a_stream_is_one_event_per_token_then_one_final_event_with_usage(runner, engine):
    """Each event carries a token id, its logprob and (possibly empty) text; only the last has a finish reason
    and usage; max_tokens is respected and ends the stream with LENGTH."""
    assert isinstance(engine, Engine)
    events = stream(runner, engine, greedy(16))
    assert len(events) == 16
    assert all(isinstance(e.token_id, int) and e.token_id >= 0 for e in events)
    assert all(isinstance(e.logprob, float) and e.logprob <= 0 for e in events)
    assert all(isinstance(e.text, str) for e in events) and text(events)
    assert [e.finish_reason for e in events] == [None] * 15 + [FinishReason.LENGTH]
    assert all(e.usage is None for e in events[:-1])
    usage = events[-1].usage
    assert usage.completion_tokens == 16 and usage.prompt_tokens > 0
    assert 0 <= usage.cached_tokens <= usage.prompt_tokens


def test_max_tokens_beyond_the_context_stops_with_length_when_the_context_is_full(runner, engine):
    """A max_tokens larger than the room left is no error: generation ends with LENGTH at the context's end."""
    assert engine.info.context_length == CONTEXT
    events = stream(runner, engine, greedy(2 * CONTEXT))
    usage = events[-1].usage
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert usage.prompt_tokens + usage.completion_tokens == CONTEXT and usage.completion_tokens == len(events)


def test_a_stop_string_ends_the_stream_with_stop_before_it(runner, engine, caps):
    """The matched stop string and everything after it are left out; the finish reason is STOP."""
    if caps.no_stop_strings:
        pytest.skip(caps.no_stop_strings)
    answer = text(stream(runner, engine, greedy(30)))
    stop = answer[10:13]
    events = stream(runner, engine, greedy(30, stop=(stop,)))
    assert events[-1].finish_reason is FinishReason.STOP
    assert text(events) == answer[: answer.index(stop)]


@pytest.mark.parametrize("leave", ["aclose", "cancel"])
def test_leaving_a_stream_early_frees_the_engine_for_the_next_request(runner, engine, leave):
    """Closing the stream after its first event (``aclose()``), or cancelling the task reading it, cancels the
    request; the next one then runs to its end and the engine is idle after it."""
    async def leave_then_ask():
        events = engine.generate(greedy(LONG))
        if leave == "aclose":
            await anext(events)
            await events.aclose()
        else:
            started = asyncio.Event()

            async def read_all():
                async for _ in events:
                    started.set()

            reader = asyncio.create_task(read_all())
            await started.wait()
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
        return [event async for event in engine.generate(greedy(8))]

    after = runner.run(asyncio.wait_for(leave_then_ask(), TIMEOUT_S))
    assert after[-1].finish_reason is FinishReason.LENGTH and after[-1].usage.completion_tokens == 8
    assert engine.running == 0 and engine.waiting == 0


def test_abort_ends_a_running_stream_with_abort_and_unknown_ids_are_refused(runner, engine):
    """abort(id) mid-stream: the stream closes with one token-less ABORT event carrying usage. abort returns
    False for an id never seen and for one whose stream is over."""
    request = greedy(LONG)

    async def abort_after_two():
        events = []
        async for event in engine.generate(request):
            events.append(event)
            if len(events) == 2:
                assert await engine.abort(request.request_id)
        return events

    events = runner.run(asyncio.wait_for(abort_after_two(), TIMEOUT_S))
    last = events[-1]
    assert last.finish_reason is FinishReason.ABORT and last.token_id is None and last.logprob is None
    assert last.usage is not None and 2 <= len(events) < LONG
    assert all(e.finish_reason is None for e in events[:-1])
    assert not runner.run(engine.abort(request.request_id))
    assert not runner.run(engine.abort("no-such-request"))


@pytest.mark.parametrize("cut", [1, 9])
def test_a_greedy_answer_continued_from_its_own_prefix_equals_the_uninterrupted_one(runner, engine, caps, cut):
    """The first ``cut`` tokens of a greedy answer, sent back as ``assistant_prefix`` with their ids as
    ``prefix_tokens``, are continued with exactly the answer's remaining tokens and text."""
    if caps.no_vocabulary or caps.no_greedy_continuation:
        pytest.skip(caps.no_vocabulary or caps.no_greedy_continuation)
    full = stream(runner, engine, greedy(20))
    assert [e.token_id for e in stream(runner, engine, greedy(20))] == [e.token_id for e in full]  # deterministic
    prefix = text(full[:cut])
    ids = tuple(e.token_id for e in full[:cut])
    continued = stream(runner, engine, greedy(20 - cut, assistant_prefix=prefix,
                                              prefix_tokens=PrefixTokens(engine.info.vocabulary, ids, prefix)))
    assert [e.token_id for e in continued] == [e.token_id for e in full[cut:]]
    assert prefix + text(continued) == text(full)
    assert continued[-1].usage.prompt_tokens == full[-1].usage.prompt_tokens + cut


def test_a_prompt_too_long_for_the_context_is_an_invalid_request_and_the_engine_goes_on(runner, engine):
    """PromptTooLongError (an InvalidRequestError) comes out of the stream; the next request runs."""
    too_long = greedy(4, messages=[Message("user", "word " * (2 * CONTEXT))])
    with pytest.raises(PromptTooLongError) as raised:
        stream(runner, engine, too_long)
    assert isinstance(raised.value, InvalidRequestError)
    assert raised.value.context_length == CONTEXT and raised.value.prompt_tokens >= CONTEXT
    assert stream(runner, engine, greedy(3))[-1].usage.completion_tokens == 3


def test_prefix_token_ids_outside_the_vocabulary_are_an_invalid_request(runner, engine, caps):
    """An id no token has is the caller's error (InvalidRequestError), not a runtime failure; the engine goes
    on."""
    if caps.no_vocabulary:
        pytest.skip(caps.no_vocabulary)
    try:
        with pytest.raises(InvalidRequestError):
            stream(runner, engine, greedy(4, assistant_prefix="x",
                                          prefix_tokens=PrefixTokens(engine.info.vocabulary, (10**6,), "x")))
    finally:
        assert stream(runner, engine, greedy(3))[-1].usage.completion_tokens == 3


def test_after_close_generate_raises_engine_closed(runner, make_engine):
    """close() is idempotent, and every later generate() raises EngineClosedError."""
    engine = make_engine()

    async def use_close_use():
        done = [event async for event in engine.generate(greedy(2))]
        engine.close()
        engine.close()
        with pytest.raises(EngineClosedError):
            async for _ in engine.generate(greedy(2)):
                pass
        return done

    assert runner.run(asyncio.wait_for(use_close_use(), TIMEOUT_S))[-1].usage.completion_tokens == 2
