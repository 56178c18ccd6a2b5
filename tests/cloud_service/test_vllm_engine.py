"""The vLLM engine on a real GPU (skipped without CUDA; needs the `gpu` extra): greedy output equals the
transformers-based engine's for the same prompt ids, streaming is one event per token, and cancel, abort
and limits behave like the other engines'.

vLLM's AsyncLLM belongs to the event loop it starts on, so the module shares one ``asyncio.Runner`` (one
loop) between the engine and every test instead of an ``asyncio.run`` per test; starting vLLM per test would
cost tens of seconds each.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from edge_runtime import (
    FinishReason,
    GenerationRequest,
    Message,
    PromptTooLongError,
    SamplingParams,
    collect,
)
from edge_runtime.chat import prompt_text

pytestmark = pytest.mark.gpu

NEAR_TIE = 1e-3
"""Two logits closer than this (float32 model) may legitimately swap places between CUDA and CPU kernels."""


@pytest.fixture(scope="module")
def runner():
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def engines(runner, tiny_llama, tiny_qwen2, tiny_mistral):
    """vLLM engines by toy family, started on first use and shut down with the module."""
    pytest.importorskip("vllm")
    from cloud_service.engines.vllm import VllmEngine, VllmEngineOptions

    options = VllmEngineOptions(
        dtype="float32",  # the references below run the float32 checkpoints as they are
        gpu_memory_utilization=0.25, max_model_len=512, max_num_seqs=16,
        extra_engine_args={"enforce_eager": True},  # no torch.compile / CUDA graphs: a quick start
    )
    made = {}

    def get(family: str):
        if family not in made:
            folder = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}[family]
            made[family] = runner.run(VllmEngine.create(folder, options=options))
        return made[family]

    yield get

    async def close():
        for engine in made.values():
            engine.close()

    runner.run(close())


@pytest.fixture(scope="module")
def engine(engines):
    return engines("llama")


@pytest.fixture(scope="module")
def cpu_engines(tiny_llama, tiny_qwen2, tiny_mistral):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    made = {}

    def get(family: str):
        if family not in made:
            folder = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}[family]
            made[family] = CpuEngine(folder, options=CpuEngineOptions(context_length=512))
        return made[family]

    yield get
    for engine in made.values():
        engine.close()


@pytest.fixture(scope="module")
def hf_models(tiny_llama, tiny_qwen2, tiny_mistral):
    import torch
    from transformers import AutoModelForCausalLM

    folders = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}
    made = {}

    def get(family: str):
        if family not in made:
            made[family] = AutoModelForCausalLM.from_pretrained(folders[family], dtype=torch.float32).eval()
        return made[family]

    return get


def _request(index: int, tokens: int = 24, **sampling) -> GenerationRequest:
    sampling = {"temperature": 0.0, "max_tokens": tokens, "ignore_eos": True} | sampling
    return GenerationRequest(
        messages=[Message("user", f"Question {index}: " + "why " * (index % 7))], sampling=SamplingParams(**sampling)
    )


def _prompt_ids(engine, request) -> list[int]:
    text, add_special = prompt_text(request, engine.template)
    return engine.tokenizer.tokenize(text, add_special=add_special)


def _first_divergence(a, b) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(2))
@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_greedy_output_equals_the_transformers_engine_for_the_same_prompt_ids(
    runner, engines, cpu_engines, hf_models, family, index
):
    import torch

    engine, cpu_engine, hf_model = engines(family), cpu_engines(family), hf_models(family)
    request = _request(index)
    ours = runner.run(collect(engine.generate(request)))
    reference = asyncio.run(collect(cpu_engine.generate(request)))  # its own thread and loop

    prompt_ids = _prompt_ids(engine, request)
    assert prompt_ids == _prompt_ids(cpu_engine, request)
    assert ours.usage.prompt_tokens == reference.usage.prompt_tokens == len(prompt_ids)
    assert ours.usage.completion_tokens == len(ours.token_ids) == 24
    assert ours.finish_reason is FinishReason.LENGTH

    split = _first_divergence(ours.token_ids, reference.token_ids)
    if split is not None:
        # Only a near tie may differ: both tokens are (almost) the argmax after the common prefix.
        with torch.inference_mode():
            logits = hf_model(torch.tensor([prompt_ids + list(ours.token_ids[:split])])).logits[0, -1]
        gap = abs(float(logits[ours.token_ids[split]] - logits[reference.token_ids[split]]))
        assert gap < NEAR_TIE, f"token {split}: vLLM chose {ours.token_ids[split]}, transformers " \
                               f"{reference.token_ids[split]}, logit gap {gap}"
    else:
        # Same ids: vLLM's detokenizer must agree with ours, or a failover would change the answer's text.
        # (The toy models babble bytes that are not always valid UTF-8; an incomplete character at the very
        # end is the one place the two detokenizers may legitimately differ.)
        assert ours.text.rstrip("\ufffd") == reference.text.rstrip("\ufffd")
    common = split if split is not None else len(ours.token_ids)
    for mine, theirs in zip(ours.logprobs[:common], reference.logprobs[:common], strict=True):
        assert math.isclose(mine, theirs, abs_tol=1e-3)


@pytest.mark.gpu
def test_streaming_is_one_event_per_token_and_concatenates_to_the_text(runner, engine):
    async def run():
        events = [event async for event in engine.generate(_request(1, 40))]
        return events, await collect(engine.generate(_request(1, 40)))

    events, completion = runner.run(run())
    assert [e.token_id for e in events] == list(completion.token_ids)
    assert all(e.token_id is not None and e.logprob is not None and e.logprob <= 0 for e in events)
    assert "".join(e.text for e in events) == completion.text
    assert all(e.finish_reason is None and e.usage is None for e in events[:-1])
    assert events[-1].finish_reason is FinishReason.LENGTH and events[-1].usage.completion_tokens == 40


@pytest.mark.gpu
def test_stop_strings_end_the_answer_before_them(runner, engine):
    full = runner.run(collect(engine.generate(_request(2, 60))))
    words = full.text.split()
    if len(words) < 4:
        pytest.skip("the toy model's greedy answer has too few words to pick a stop string from")
    stop = words[len(words) // 2]
    cut = runner.run(collect(engine.generate(_request(2, 60, stop=(stop,)))))
    assert cut.finish_reason is FinishReason.STOP
    assert cut.text == full.text[: full.text.index(stop)]


@pytest.mark.gpu
def test_leaving_a_stream_frees_the_engine(runner, engine):
    async def run():
        stream = engine.generate(_request(3, 400))
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()
        assert engine.running == 0 and engine.waiting == 0

        task = asyncio.create_task(collect(engine.generate(_request(4, 400))))
        while not engine.running:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.running == 0 and engine.waiting == 0
        return await collect(engine.generate(_request(5, 5)))

    after = runner.run(run())
    assert after.usage.completion_tokens == 5 and engine.cache_usage == 0.0


@pytest.mark.gpu
def test_abort_by_id_ends_the_stream_with_abort(runner, engine):
    request = _request(6, 400)

    async def run():
        events = []
        async for event in engine.generate(request):
            events.append(event)
            if len(events) == 2:
                assert await engine.abort(request.request_id)
        assert not await engine.abort(request.request_id)
        assert not await engine.abort("no-such-request")
        return events

    events = runner.run(asyncio.wait_for(run(), timeout=60))
    assert events[-1].finish_reason is FinishReason.ABORT and events[-1].token_id is None
    assert len(events) < 400 and engine.running == 0 and engine.waiting == 0


@pytest.mark.gpu
def test_concurrent_streams_share_the_engine_and_each_completes(runner, engine):
    seen = []

    async def one(i):
        events = []
        async for event in engine.generate(_request(i, 30)):
            events.append(event)
            seen.append(engine.running)
        return events

    async def run():
        return await asyncio.gather(*(one(i) for i in range(8)))

    streams = runner.run(run())
    assert all(len(events) == 30 and events[-1].finish_reason is FinishReason.LENGTH for events in streams)
    assert max(seen) >= 2 and engine.running == 0


@pytest.mark.gpu
def test_a_repeated_long_prompt_reuses_the_prefix_cache(runner, engine):
    request = GenerationRequest(prompt="the colour of the sky is blue " * 12,
                                sampling=SamplingParams(temperature=0.0, max_tokens=4))
    first = runner.run(collect(engine.generate(request)))
    again = runner.run(collect(engine.generate(GenerationRequest(prompt=request.prompt, sampling=request.sampling))))
    assert first.usage.prompt_tokens == again.usage.prompt_tokens
    assert again.usage.cached_tokens > 0 and again.usage.cached_tokens <= again.usage.prompt_tokens


@pytest.mark.gpu
def test_limits_are_typed_errors_and_the_engine_goes_on(runner, engine):
    async def run():
        with pytest.raises(PromptTooLongError):
            await collect(engine.generate(GenerationRequest(prompt="word " * 600)))
        return await collect(engine.generate(_request(7, None)))

    completion = runner.run(run())
    assert completion.finish_reason is FinishReason.LENGTH
    assert completion.usage.prompt_tokens + completion.usage.completion_tokens == engine.context_length == 512
    assert engine.info.backend == "vllm" and engine.info.context_length == 512
