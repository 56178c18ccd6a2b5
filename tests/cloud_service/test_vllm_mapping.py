"""The vLLM engine without vLLM: the pure mappings (options, sampling parameters, deltas to TokenEvents,
errors), the import weight, the missing-backend error, and the engine's stream/abort/close logic over a fake
AsyncLLM shaped like vLLM's (its behaviour before and after vLLM 0.11 pushed a closing output on abort)."""

from __future__ import annotations

import asyncio
import math
import sys
from types import SimpleNamespace

import pytest

from cloud_service.engines.vllm import (
    VllmEngine,
    VllmEngineOptions,
    _VllmApi,
    engine_args_kwargs,
    events_from_delta,
    finish_reason_from_vllm,
    to_vllm_sampling_kwargs,
    translate_vllm_error,
)
from edge_runtime import (
    BackendUnavailableError,
    EngineBusyError,
    EngineClosedError,
    FinishReason,
    GenerationError,
    GenerationRequest,
    InvalidRequestError,
    Message,
    PromptTooLongError,
    SamplingParams,
    TokenEvent,
    Usage,
    collect,
)
from edge_runtime.chat import prompt_text
from tests.support import heavy_modules_after

# -- sampling parameters ------------------------------------------------------------------------------------------


def test_sampling_defaults_map_to_vllm_with_delta_friendly_output_settings():
    kwargs = to_vllm_sampling_kwargs(SamplingParams(), room=1000)
    assert kwargs == {
        "n": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 256, "stop": [], "seed": None,
        "ignore_eos": False, "logprobs": 0, "detokenize": True, "skip_special_tokens": True,
        "include_stop_str_in_output": False,
    }


def test_sampling_fields_pass_through_and_max_tokens_is_capped_by_the_room_left():
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, max_tokens=64, stop=("\n\n", "END"), seed=7,
                            ignore_eos=True)
    kwargs = to_vllm_sampling_kwargs(params, room=50)
    assert kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9 and kwargs["top_k"] == 40
    assert kwargs["max_tokens"] == 50
    assert kwargs["stop"] == ["\n\n", "END"] and isinstance(kwargs["stop"], list)
    assert kwargs["seed"] == 7 and kwargs["ignore_eos"] is True
    assert to_vllm_sampling_kwargs(SamplingParams(max_tokens=None), room=123)["max_tokens"] == 123
    assert to_vllm_sampling_kwargs(SamplingParams(max_tokens=5), room=123)["max_tokens"] == 5


def test_greedy_is_temperature_zero_with_top_k_disabled_and_no_seed():
    kwargs = to_vllm_sampling_kwargs(SamplingParams(temperature=0.0, seed=3), room=10)
    assert kwargs["temperature"] == 0.0 and kwargs["top_k"] == 0 and kwargs["seed"] is None
    assert isinstance(kwargs["temperature"], float)


@pytest.mark.parametrize("room", [0, -3, 1.5])
def test_no_room_is_an_invalid_request(room):
    with pytest.raises(InvalidRequestError, match="room"):
        to_vllm_sampling_kwargs(SamplingParams(), room=room)


# -- deltas -> TokenEvents ----------------------------------------------------------------------------------------


class Logprob:
    """Shaped like vllm.logprobs.Logprob."""

    def __init__(self, logprob: float, rank: int = 1) -> None:
        self.logprob, self.rank, self.decoded_token = logprob, rank, None


def test_one_token_delta_is_one_event_with_its_logprob():
    assert events_from_delta(" hi", [42], [{42: Logprob(-0.25)}], None) == [TokenEvent(" hi", 42, -0.25)]


def test_a_multi_token_delta_gives_one_event_per_token_with_the_text_on_the_last():
    events = events_from_delta("abc", [1, 2, 3], [{1: Logprob(-1.0)}, {2: Logprob(-2.0)}, {3: Logprob(-3.0)}],
                               None)
    assert events == [TokenEvent("", 1, -1.0), TokenEvent("", 2, -2.0), TokenEvent("abc", 3, -3.0)]


def test_the_finishing_delta_carries_finish_reason_and_usage_on_its_last_event_only():
    usage = Usage(10, 2, 4)
    events = events_from_delta("x", [5, 6], [{5: Logprob(-0.5)}, {6: Logprob(-0.75)}], "length", usage)
    assert events[0] == TokenEvent("", 5, -0.5)
    assert events[1] == TokenEvent("x", 6, -0.75, FinishReason.LENGTH, usage)
    assert events_from_delta("", [7], [{7: Logprob(0.0)}], "stop", usage)[-1].finish_reason is FinishReason.STOP
    assert events_from_delta("", [7], [{7: Logprob(0.0)}], None, usage)[-1].usage is None


def test_the_chosen_tokens_entry_is_picked_among_top_logprobs():
    # logprobs=1: the sampled token first, then the top-1 token (another id here).
    position = {9: Logprob(-2.5, rank=3), 4: Logprob(-0.1, rank=1)}
    assert events_from_delta("", [9], [position], None)[0].logprob == -2.5


def test_logprobs_are_aligned_from_the_end_and_missing_ones_are_nan():
    events = events_from_delta("ab", [1, 2], [{2: Logprob(-0.5)}], None)
    assert math.isnan(events[0].logprob) and events[1].logprob == -0.5
    assert math.isnan(events_from_delta("a", [1], None, None)[0].logprob)
    # A position lacking the chosen id falls back to its first entry (vLLM inserts the sampled token first).
    assert events_from_delta("a", [1], [{8: Logprob(-0.3)}], None)[0].logprob == -0.3
    assert events_from_delta("a", [1], [-0.125], None)[0].logprob == -0.125


def test_token_less_deltas_give_nothing_unless_they_finish_the_request():
    assert events_from_delta("", [], [], None) == []
    usage = Usage(3, 5)
    assert events_from_delta("tail", [], [], "abort", usage) == [
        TokenEvent("tail", None, None, FinishReason.ABORT, usage)
    ]


def test_finish_reasons_map_and_error_raises():
    assert finish_reason_from_vllm(None) is None
    assert finish_reason_from_vllm("stop") is FinishReason.STOP
    assert finish_reason_from_vllm("length") is FinishReason.LENGTH
    assert finish_reason_from_vllm("abort") is FinishReason.ABORT
    assert finish_reason_from_vllm("repetition") is FinishReason.STOP
    assert finish_reason_from_vllm("something-new") is FinishReason.STOP
    with pytest.raises(GenerationError, match="error"):
        finish_reason_from_vllm("error")


# -- errors ---------------------------------------------------------------------------------------------------------


def _vllm_error(name: str, module: str, *bases: type) -> type[Exception]:
    return type(name, bases or (Exception,), {"__module__": module})


def test_vllm_errors_translate_by_kind():
    dead = _vllm_error("EngineDeadError", "vllm.v1.engine.exceptions")
    generate = _vllm_error("EngineGenerateError", "vllm.v1.engine.exceptions")
    client = _vllm_error("VLLMClientError", "vllm.exceptions")
    validation = _vllm_error("VLLMValidationError", "vllm.exceptions", client)
    overflow = _vllm_error("QueueOverflowError", "vllm.exceptions")

    assert isinstance(translate_vllm_error(dead("gone")), GenerationError)
    assert "restarted" in str(translate_vllm_error(dead("gone")))
    wrapped = generate()
    wrapped.__cause__ = RuntimeError("CUDA error: illegal memory access")
    error = translate_vllm_error(wrapped)
    assert isinstance(error, GenerationError) and "illegal memory access" in str(error)
    assert isinstance(translate_vllm_error(validation("top_p must be in (0, 1]")), InvalidRequestError)
    assert isinstance(translate_vllm_error(ValueError("prompt is longer than max_model_len")), InvalidRequestError)
    assert isinstance(translate_vllm_error(overflow("busy")), EngineBusyError)
    assert isinstance(translate_vllm_error(RuntimeError("boom")), GenerationError)
    # Only vLLM's classes count: a same-named class elsewhere is an ordinary failure.
    assert type(translate_vllm_error(_vllm_error("VLLMClientError", "somewhere.else")())) is GenerationError
    ours = PromptTooLongError("long", prompt_tokens=5, context_length=4)
    assert translate_vllm_error(ours) is ours


# -- options -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "name"), [
    ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"tensor_parallel_size": True}, "tensor_parallel_size"),
    ({"pipeline_parallel_size": 1.0}, "pipeline_parallel_size"),
    ({"gpu_memory_utilization": 0}, "gpu_memory_utilization"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"gpu_memory_utilization": "0.9"}, "gpu_memory_utilization"),
    ({"max_model_len": 0}, "max_model_len"),
    ({"max_num_seqs": -1}, "max_num_seqs"),
    ({"enable_prefix_caching": "yes"}, "enable_prefix_caching"),
    ({"dtype": "int8"}, "dtype"),
    ({"extra_engine_args": ["enforce_eager"]}, "extra_engine_args"),
    ({"extra_engine_args": {"model": "other"}}, "extra_engine_args"),
    ({"extra_engine_args": {"tokenizer": "other"}}, "extra_engine_args"),
    ({"extra_engine_args": {"dtype": "half"}}, "extra_engine_args"),
])
def test_invalid_options_name_the_field(fields, name):
    with pytest.raises(InvalidRequestError, match=name):
        VllmEngineOptions(**fields)


def test_options_become_async_engine_args(tmp_path):
    options = VllmEngineOptions(tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=4096,
                                enable_prefix_caching=False, dtype="bfloat16", max_num_seqs=64,
                                extra_engine_args={"enforce_eager": True, "seed": 1})
    assert engine_args_kwargs(tmp_path, options) == {
        "model": str(tmp_path), "tensor_parallel_size": 2, "pipeline_parallel_size": 1,
        "gpu_memory_utilization": 0.5, "enable_prefix_caching": False, "dtype": "bfloat16",
        "max_model_len": 4096, "max_num_seqs": 64, "enforce_eager": True, "seed": 1,
    }
    defaults = engine_args_kwargs(tmp_path, VllmEngineOptions())
    assert "max_model_len" not in defaults and "max_num_seqs" not in defaults
    assert defaults["gpu_memory_utilization"] == 0.9 and defaults["dtype"] == "auto"


# -- import weight and the missing backend -------------------------------------------------------------------------


def test_importing_the_module_loads_neither_vllm_nor_torch():
    assert not {"vllm", "torch", "transformers"} & set(heavy_modules_after("import cloud_service.engines.vllm"))


def test_without_vllm_the_engine_says_which_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails, installed or not
    with pytest.raises(BackendUnavailableError, match=r"tandem-inference\[cloud,gpu\]") as caught:
        VllmEngine(tmp_path)
    assert isinstance(caught.value, ImportError)


# -- the engine over a fake AsyncLLM --------------------------------------------------------------------------------


def _output(request_id, text, token_ids, finish=None, cached=0):
    completion = SimpleNamespace(
        index=0, text=text, token_ids=list(token_ids), finish_reason=finish,
        logprobs=[{t: Logprob(-t / 100)} for t in token_ids],
    )
    return SimpleNamespace(request_id=request_id, outputs=[completion], finished=finish is not None,
                           num_cached_tokens=cached, prompt_token_ids=None)


class FakeAsyncLLM:
    """The part of vllm.v1.engine.async_llm.AsyncLLM the engine uses. Token i of a request is id 100+i with
    text "w<i> "; ``per_delta`` tokens come per output; ``final_abort_output`` is vLLM >= 0.11's behaviour
    (an external abort ends the stream with finish_reason "abort"), False is 0.10's (the stream hangs)."""

    def __init__(self, *, max_model_len=256, per_delta=1, final_abort_output=True, cached=0, fail=None):
        self.model_config = SimpleNamespace(max_model_len=max_model_len)
        self.vllm_config = SimpleNamespace(model_config=self.model_config,
                                           scheduler_config=SimpleNamespace(max_num_seqs=12))
        self.per_delta, self.final_abort_output, self.cached, self.fail = per_delta, final_abort_output, cached, fail
        self.calls, self.abort_calls, self.internal_aborts = [], [], []
        self.live: dict[str, dict] = {}
        self.engine_args = None
        self.shut_down = False

    async def generate(self, prompt, sampling_params, request_id):
        self.calls.append((prompt, sampling_params, request_id))
        state = self.live[request_id] = {"aborted": False}
        try:
            await asyncio.sleep(0.002)  # "prefill": the request is waiting
            if self.fail is not None:
                raise self.fail
            total = sampling_params["max_tokens"]
            produced = 0
            while produced < total:
                await asyncio.sleep(0.001)
                if state["aborted"]:
                    if self.final_abort_output:
                        yield _output(request_id, "", [], "abort", self.cached)
                        return
                    await asyncio.Event().wait()  # vLLM 0.10: nothing ever comes
                ids = [100 + i for i in range(produced, min(produced + self.per_delta, total))]
                produced += len(ids)
                yield _output(request_id, "".join(f"w{i - 100} " for i in ids), ids,
                              "length" if produced == total else None, self.cached)
        except (asyncio.CancelledError, GeneratorExit):
            self.internal_aborts.append(request_id)
            raise
        finally:
            self.live.pop(request_id, None)

    async def abort(self, request_id):
        self.abort_calls.append(request_id)
        if (state := self.live.get(request_id)) is not None:
            state["aborted"] = True

    def shutdown(self):
        self.shut_down = True


def _fake_engine_class(**fake):
    """A VllmEngine whose vLLM is FakeAsyncLLM, and that fake."""
    llm = FakeAsyncLLM(**fake)

    class FakeAsyncLLMClass:
        @staticmethod
        def from_engine_args(engine_args, stat_loggers=None):
            llm.engine_args = engine_args
            return llm

    class FakeVllmEngine(VllmEngine):
        def _load_vllm(self):
            return _VllmApi(
                version="0.0.fake", AsyncLLM=FakeAsyncLLMClass, AsyncEngineArgs=lambda **kw: kw,
                SamplingParams=lambda **kw: kw, delta="DELTA", make_prompt=lambda ids: {"prompt_token_ids": ids},
            )

    return FakeVllmEngine, llm


OPTIONS = VllmEngineOptions(extra_engine_args={"enforce_eager": True})


def _fake_engine(folder, **fake):
    engine_class, llm = _fake_engine_class(**fake)
    return engine_class(folder, name="fake", version="v9", options=OPTIONS), llm


def _request(tokens=8, **fields):
    return GenerationRequest(messages=[Message("user", "Name three colours.")],
                             sampling=SamplingParams(temperature=0.0, max_tokens=tokens), **fields)


def test_fake_engine_streams_one_event_per_token_with_our_prompt_ids(tiny_llama):
    engine, llm = _fake_engine(tiny_llama, cached=16)
    request = _request(5)

    async def run():
        return [event async for event in engine.generate(request)]

    events = asyncio.run(run())
    prompt, params, request_id = llm.calls[0]
    text, add_special = prompt_text(request, engine.template)
    assert prompt == {"prompt_token_ids": engine.tokenizer.tokenize(text, add_special=add_special)}
    assert request_id == request.request_id
    assert params["output_kind"] == "DELTA" and params["logprobs"] == 0 and params["max_tokens"] == 5
    assert [e.token_id for e in events] == [100, 101, 102, 103, 104]
    assert [e.logprob for e in events] == [-1.0, -1.01, -1.02, -1.03, -1.04]
    assert "".join(e.text for e in events) == "w0 w1 w2 w3 w4 "
    assert events[-1].finish_reason is FinishReason.LENGTH and all(e.finish_reason is None for e in events[:-1])
    assert events[-1].usage == Usage(len(prompt["prompt_token_ids"]), 5, 16)
    assert llm.abort_calls == [] and llm.internal_aborts == []
    assert engine.running == 0 and engine.waiting == 0
    assert llm.engine_args["model"] == str(tiny_llama) and llm.engine_args["enforce_eager"] is True
    assert engine.info.backend == "vllm" and engine.info.context_length == 256 and engine.info.version == "v9"
    assert engine.info.details["max_running"] == 12 and engine.info.details["vllm_version"] == "0.0.fake"


def test_fake_engine_spreads_merged_deltas_over_tokens(tiny_llama):
    engine, _ = _fake_engine(tiny_llama, per_delta=3)

    async def run():
        events = [event async for event in engine.generate(_request(7))]
        return events, await collect(engine.generate(_request(7)))

    events, completion = asyncio.run(run())
    assert [e.token_id for e in events] == list(range(100, 107))
    assert [e.text for e in events] == ["", "", "w0 w1 w2 ", "", "", "w3 w4 w5 ", "w6 "]
    assert completion.text == "w0 w1 w2 w3 w4 w5 w6 " and completion.usage.completion_tokens == 7


def test_max_tokens_none_uses_the_room_left_and_long_prompts_are_refused(tiny_llama):
    engine, llm = _fake_engine(tiny_llama, max_model_len=64)

    async def run():
        completion = await collect(engine.generate(_request(None)))
        with pytest.raises(PromptTooLongError):
            await collect(engine.generate(GenerationRequest(prompt="colour " * 200)))
        return completion

    completion = asyncio.run(run())
    assert completion.usage.prompt_tokens + completion.usage.completion_tokens == 64
    assert llm.calls[0][1]["max_tokens"] == 64 - completion.usage.prompt_tokens
    assert len(llm.calls) == 1  # the long prompt never reached vLLM


@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_a_caller_leaving_mid_stream_aborts_in_vllm_and_frees_the_engine(tiny_llama, how):
    engine, llm = _fake_engine(tiny_llama)
    request = _request(200)

    async def run():
        if how == "aclose":
            stream = engine.generate(request)
            async for _ in stream:
                assert engine.running == 1
                break
            await stream.aclose()
        else:
            task = asyncio.create_task(collect(engine.generate(request)))
            while not engine.running:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert engine.running == 0 and engine.waiting == 0
        return await collect(engine.generate(_request(3)))

    after = asyncio.run(run())
    assert llm.internal_aborts == [request.request_id]  # vLLM's generate saw the cancellation
    assert llm.abort_calls == [request.request_id]  # and the extra abort by id was a harmless no-op
    assert after.usage.completion_tokens == 3


def test_waiting_counts_requests_without_output_yet(tiny_llama):
    engine, _ = _fake_engine(tiny_llama)

    async def run():
        task = asyncio.create_task(collect(engine.generate(_request(50))))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        counts = [(engine.waiting, engine.running)]
        while not engine.running:
            await asyncio.sleep(0.001)
        counts.append((engine.waiting, engine.running))
        await task
        counts.append((engine.waiting, engine.running))
        return counts

    assert asyncio.run(run()) == [(1, 0), (0, 1), (0, 0)]


@pytest.mark.parametrize("final_abort_output", [True, False], ids=["vllm>=0.11", "vllm0.10"])
def test_abort_by_id_ends_the_stream_with_abort(tiny_llama, final_abort_output):
    engine, llm = _fake_engine(tiny_llama, final_abort_output=final_abort_output)
    request = _request(400)

    async def run():
        events = []
        async for event in engine.generate(request):
            events.append(event)
            if len(events) == 2:
                assert await engine.abort(request.request_id)
        assert not await engine.abort(request.request_id)  # over
        assert not await engine.abort("no-such-request")
        assert engine.running == 0 and engine.waiting == 0
        return events

    events = asyncio.run(asyncio.wait_for(run(), timeout=30))
    last = events[-1]
    assert last.finish_reason is FinishReason.ABORT and last.token_id is None and last.logprob is None
    assert last.usage.completion_tokens == len(events) - 1 < 400
    assert set(llm.abort_calls) == {request.request_id}  # ours, and the closing stream's no-op one (0.10)


def test_vllm_failures_become_our_errors_and_the_engine_goes_on(tiny_llama):
    dead = _vllm_error("EngineDeadError", "vllm.v1.engine.exceptions")
    engine, llm = _fake_engine(tiny_llama, fail=dead("EngineCore encountered an issue"))

    async def run():
        with pytest.raises(GenerationError, match="died") as caught:
            await collect(engine.generate(_request(3)))
        assert type(caught.value.__cause__) is dead
        llm.fail = ValueError("token id 99999 is out of vocabulary")
        with pytest.raises(InvalidRequestError, match="out of vocabulary"):
            await collect(engine.generate(_request(3)))
        llm.fail = None
        return await collect(engine.generate(_request(3)))

    assert asyncio.run(run()).usage.completion_tokens == 3
    assert llm.abort_calls == [] and engine.running == 0


def test_a_request_id_runs_once_at_a_time(tiny_llama):
    engine, _ = _fake_engine(tiny_llama)
    request = _request(100)

    async def run():
        first = engine.generate(request)
        await anext(first)
        with pytest.raises(InvalidRequestError, match="already running"):
            await collect(engine.generate(request))
        await first.aclose()
        return await collect(engine.generate(request))

    assert asyncio.run(run()).usage.completion_tokens == 100


def test_close_fails_open_streams_and_later_requests(tiny_llama):
    engine, llm = _fake_engine(tiny_llama, final_abort_output=False)

    async def run():
        running = asyncio.create_task(collect(engine.generate(_request(400))))
        while not engine.running:
            await asyncio.sleep(0.001)
        await asyncio.to_thread(engine.close)
        with pytest.raises(EngineClosedError):
            await running
        with pytest.raises(EngineClosedError):
            await collect(engine.generate(_request(2)))
        assert not await engine.abort("anything")

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert llm.shut_down and engine.running == 0
    engine.close()  # twice is fine


def test_the_engine_belongs_to_the_loop_it_first_ran_on(tiny_llama):
    engine, _ = _fake_engine(tiny_llama)
    assert asyncio.run(collect(engine.generate(_request(2)))).usage.completion_tokens == 2
    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(collect(engine.generate(_request(2))))


def test_create_builds_the_engine_in_the_running_loop(tiny_llama):
    engine_class, _ = _fake_engine_class()

    async def run():
        engine = await engine_class.create(tiny_llama, options=OPTIONS)
        assert engine._loop is asyncio.get_running_loop()
        return await collect(engine.generate(_request(2)))

    assert asyncio.run(run()).usage.completion_tokens == 2
