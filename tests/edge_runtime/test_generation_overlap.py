"""``run_generation`` with its helper thread (the overlap the local engine uses) makes exactly the events of
the plain loop on real decoders: greedy, seeded sampling, a stop sequence (whose one extra decoded token must
not disturb the next request's KV-cache reuse), and a decoder that fails mid-stream (every event before the
failure is delivered, in order, before the error)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from edge_runtime import GenerationRequest, Message, SamplingParams, load_bundle
from edge_runtime.errors import GenerationError
from edge_runtime.generation import run_generation
from edge_runtime.types import TokenEvent
from tests.edge_runtime.conftest import PROMPT_MESSAGES

BACKENDS = [("gguf", "f32"), ("onnx", "fp32")]
MESSAGES = [Message(role, text) for role, text in PROMPT_MESSAGES]


@pytest.fixture(params=BACKENDS, ids=lambda p: p[0])
def decoders(request, bundles, trusted):
    """Two engines on one bundle, loaded: one runs the plain loop, the other the overlapped one."""
    bundle = bundles("llama", *request.param)
    engines = [load_bundle(bundle, trusted_keys=trusted) for _ in range(2)]
    for engine in engines:
        engine.load()
    with ThreadPoolExecutor(max_workers=1) as overlap:
        yield engines, overlap
    for engine in engines:
        engine.close()


def _run(engine, request, overlap=None, decoder=None) -> list[TokenEvent]:
    events: list[TokenEvent] = []
    run_generation(decoder or engine._decoder, engine.template, request, events.append, lambda: False, overlap)
    return events


def _same(got: list[TokenEvent], expected: list[TokenEvent]) -> bool:
    """Equal events; logprobs to float32 rounding (a reduction's last bits depend on the buffer's alignment)."""
    return len(got) == len(expected) and all(
        (g.text, g.token_id, g.finish_reason, g.usage) == (e.text, e.token_id, e.finish_reason, e.usage)
        and g.logprob == pytest.approx(e.logprob, abs=1e-5) for g, e in zip(got, expected, strict=True)
    )


def _request(messages=MESSAGES, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=messages, sampling=SamplingParams(**{"max_tokens": 20} | sampling))


@pytest.mark.parametrize("sampling", [
    {"temperature": 0.0, "ignore_eos": True},
    {"temperature": 0.9, "top_p": 0.9, "seed": 7, "ignore_eos": True},
    {"temperature": 0.0, "max_tokens": 1, "ignore_eos": True},
], ids=["greedy", "seeded", "one-token"])
def test_overlapped_events_equal_the_plain_loops(decoders, sampling):
    (plain, overlapped), overlap = decoders
    expected = _run(plain, _request(**sampling))
    assert _same(_run(overlapped, _request(**sampling), overlap), expected)
    assert len(expected) == sampling.get("max_tokens", 20)


def test_a_stop_sequence_ends_both_alike_and_the_next_turn_reuses_the_cache_alike(decoders):
    (plain, overlapped), overlap = decoders
    full = _run(plain, _request(temperature=0.0, ignore_eos=True))
    assert _same(_run(overlapped, _request(temperature=0.0, ignore_eos=True), overlap), full)  # same caches
    text = "".join(e.text for e in full)
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip(), text
    first = _request(temperature=0.0, ignore_eos=True, stop=(stop,))
    expected = _run(plain, first)
    assert _same(_run(overlapped, first, overlap), expected)
    assert expected[-1].finish_reason == "stop" and len(expected) < 20
    answer = "".join(e.text for e in expected)
    turn = _request([*MESSAGES, Message("assistant", answer), Message("user", "And then?")], temperature=0.0,
                    ignore_eos=True)
    expected_turn = _run(plain, turn)
    assert _same(_run(overlapped, turn, overlap), expected_turn)


class _FailingAfter:
    """A real decoder whose decode step fails after ``steps`` steps (a runtime error mid-stream)."""

    def __init__(self, decoder, steps: int) -> None:
        self._decoder, self._left = decoder, steps

    def __getattr__(self, name):
        return getattr(self._decoder, name)

    def decode_one_token(self, token_id: int):
        if self._left == 0:
            raise GenerationError("the runtime failed")
        self._left -= 1
        return self._decoder.decode_one_token(token_id)


def test_a_failing_decode_step_delivers_every_earlier_event_first(decoders):
    (plain, overlapped), overlap = decoders
    expected = _run(plain, _request(temperature=0.0, ignore_eos=True))
    events: list[TokenEvent] = []
    with pytest.raises(GenerationError, match="the runtime failed"):
        run_generation(_FailingAfter(overlapped._decoder, 5), overlapped.template,
                       _request(temperature=0.0, ignore_eos=True), events.append, lambda: False, overlap)
    assert _same(events, expected[:6])  # the prefill's token and one per successful step



@pytest.mark.parametrize("fmt, quantization", BACKENDS, ids=lambda v: v)
def test_engines_with_and_without_the_overlap_stream_the_same_answer(bundles, trusted, fmt, quantization):
    from edge_runtime import EngineOptions, collect

    bundle = bundles("llama", fmt, quantization)
    request = _request(temperature=0.0, ignore_eos=True, stop=("zz",))
    answers = []
    for overlap in (True, False):
        with load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(overlap_events=overlap)) as engine:
            answers.append(asyncio.run(collect(engine.generate(request))))
            assert (engine._events is not None) is overlap
    assert answers[0].text == answers[1].text and answers[0].token_ids == answers[1].token_ids


def test_the_overlap_is_on_where_decoding_leaves_a_core_free(monkeypatch):
    from edge_runtime import EngineOptions
    from edge_runtime.errors import InvalidRequestError
    from edge_runtime.loading import _overlap_events

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert _overlap_events("gguf", EngineOptions())  # llama-cpp-python's default: half the cores
    assert not _overlap_events("onnx", EngineOptions())  # ONNX Runtime's: all of them
    assert _overlap_events("onnx", EngineOptions(threads=3))
    assert not _overlap_events("gguf", EngineOptions(threads=4))
    assert _overlap_events("gguf", EngineOptions(threads=4, overlap_events=True))
    assert not _overlap_events("gguf", EngineOptions(threads=1, overlap_events=False))
    with pytest.raises(InvalidRequestError, match="overlap_events"):
        EngineOptions(overlap_events="yes")  # type: ignore[arg-type]
