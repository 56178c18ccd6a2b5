"""A real replica (the CPU engine over a toy model, on loopback) charging and counting every call however it
ends: cancelling streams cannot dodge the token quota, deadlines are DEADLINE_EXCEEDED, refusals before the
engine are in the metrics, a lower-case Bearer scheme is accepted, and a stream the drain timeout cuts ends
UNAVAILABLE with the tokens it delivered."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cloud_service.auth import hash_key
from cloud_service.client import CloudClient
from cloud_service.config import Limits, TenantConfig
from cloud_service.errors import DELIVERED_METADATA, DRAINING_METADATA, RateLimitedError, StreamInterruptedError
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc
from edge_runtime import collect
from tests.cloud_service.test_server import KEY, TENANTS, _config, _request, run_with_server

THRIFTY_KEY = "tdm_thrifty_key"
THRIFTY = TenantConfig("thrifty", hash_key(THRIFTY_KEY), tokens_per_minute=150)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    engine = CpuEngine(tiny_llama, name="toy", version="v1", options=CpuEngineOptions(max_running=8))
    yield engine
    engine.close()


def _sample(server, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_cancelling_streams_in_a_loop_is_charged_and_ends_in_resource_exhausted(tiny_llama, engine):
    async def body(server, target):
        served, refused = 0, None
        async with CloudClient(target, api_key=THRIFTY_KEY) as cloud:
            for index in range(12):  # bounded: 150 tokens a minute cannot pay for 12 x (prompt + 12)
                stream = cloud.generate(_request(index, 64), model="toy")
                try:
                    received = 0
                    async for event in stream:
                        received += event.token_id is not None
                        if received == 12:
                            break
                except RateLimitedError as exc:
                    refused = exc
                    break
                finally:
                    await stream.aclose()
                served += 1
                while server.inference.inflight:  # the replica has seen the cancel and charged it
                    await asyncio.sleep(0.005)
        return served, refused, _sample(server, "tandem_generated_tokens_total", model="toy"), \
            _sample(server, "tandem_requests_total", model="toy", status="CANCELLED")

    config = _config(tiny_llama, tenants=(*TENANTS, THRIFTY))
    served, refused, generated, cancelled = run_with_server(config, engine, body)
    assert refused is not None and refused.retry_after_s and refused.retry_after_s > 0
    assert 1 <= served < 12
    assert cancelled == served and generated >= 12 * served  # each cancelled stream's tokens were counted


def test_a_deadline_is_counted_as_deadline_exceeded_and_its_tokens_as_generated(tiny_llama, engine):
    async def body(server, target):
        async with grpc.aio.insecure_channel(target) as channel:
            call = inference_pb2_grpc.InferenceStub(channel).Generate(
                pb.GenerateRequest(request_id="slow", model="toy", prompt="Count with me",
                                   sampling=pb.SamplingParams(max_tokens=5000, ignore_eos=True)),
                metadata=(("authorization", f"Bearer {KEY}"),), timeout=0.5)
            tokens = 0
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for chunk in call:
                    tokens += len(chunk.token_ids)
        while server.inference.inflight:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the access log runs after the handler left
        return caught.value.code(), tokens, _sample(server, "tandem_requests_total", model="toy",
                                                    status="DEADLINE_EXCEEDED"), \
            _sample(server, "tandem_generated_tokens_total", model="toy")

    limits = Limits(max_prompt_tokens=256, max_tokens=100_000)
    code, tokens, deadlines, generated = run_with_server(_config(tiny_llama, limits=limits), engine, body)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and tokens > 0
    assert deadlines == 1 and generated >= tokens


def test_refusals_before_the_engine_are_counted_by_status_and_bearer_is_any_case(tiny_llama, engine):
    async def body(server, target):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)

            async def status(request: pb.GenerateRequest, auth: str | None) -> grpc.StatusCode:
                metadata = (("authorization", auth),) if auth else ()
                try:
                    async for _ in stub.Generate(request, metadata=metadata, timeout=10):
                        pass
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            good = pb.GenerateRequest(request_id="r1", model="toy", prompt="Hi",
                                      sampling=pb.SamplingParams(max_tokens=2))
            codes = [
                await status(good, None),
                await status(good, f"bearer {KEY}"),
                await status(good, f"BEARER {KEY}"),
                await status(pb.GenerateRequest(model="toy", prompt="no id"), f"Bearer {KEY}"),
                await status(pb.GenerateRequest(request_id="r2", model="nope", prompt="Hi"), f"Bearer {KEY}"),
            ]
        await asyncio.sleep(0.05)
        counted = {code: _sample(server, "tandem_requests_total", model=model, status=code)
                   for model, code in (("", "UNAUTHENTICATED"), ("toy", "OK"), ("toy", "INVALID_ARGUMENT"),
                                       ("nope", "NOT_FOUND"))}
        return codes, counted

    codes, counted = run_with_server(_config(tiny_llama), engine, body)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK, grpc.StatusCode.OK,
                     grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND]
    assert counted == {"UNAUTHENTICATED": 1, "OK": 2, "INVALID_ARGUMENT": 1, "NOT_FOUND": 1}


def test_a_stream_cut_by_the_drain_timeout_ends_unavailable_with_the_tokens_delivered(tiny_llama, engine):
    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            events = []

            async def read() -> None:
                async for event in cloud.generate(_request(0, 5000), model="toy"):
                    events.append(event)

            reading = asyncio.create_task(read())
            while len(events) < 3:
                await asyncio.sleep(0.005)
            drained = await server.drain(timeout_s=0.2)
            with pytest.raises(StreamInterruptedError) as caught:
                await reading
        return drained, caught.value, sum(e.token_id is not None for e in events)

    limits = Limits(max_prompt_tokens=256, max_tokens=100_000)
    drained, error, received = run_with_server(_config(tiny_llama, limits=limits), engine, body)
    assert not drained
    assert error.code == "UNAVAILABLE" and "drain" in str(error)
    assert error.delivered_tokens == received > 3


def test_the_cut_trailers_reach_a_raw_client(tiny_llama, engine):
    async def body(server, target):
        async with grpc.aio.insecure_channel(target) as channel:
            call = inference_pb2_grpc.InferenceStub(channel).Generate(
                pb.GenerateRequest(request_id="cut", model="toy", prompt="Hello",
                                   sampling=pb.SamplingParams(max_tokens=5000, ignore_eos=True)),
                metadata=(("authorization", f"Bearer {KEY}"),), timeout=30)
            tokens = 0
            drain = None
            try:
                async for chunk in call:
                    tokens += len(chunk.token_ids)
                    if drain is None and tokens >= 2:
                        drain = asyncio.create_task(server.drain(timeout_s=0.1))
            except grpc.aio.AioRpcError:
                pass
            trailing = dict(await call.trailing_metadata() or ())
            await drain
            return await call.code(), tokens, trailing

    limits = Limits(max_prompt_tokens=256, max_tokens=100_000)
    code, tokens, trailing = run_with_server(_config(tiny_llama, limits=limits), engine, body)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert int(trailing[DELIVERED_METADATA]) == tokens and trailing[DRAINING_METADATA] == "1"


def test_a_finished_call_is_charged_its_usage_once(tiny_llama, engine):
    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            answer = await collect(cloud.generate(_request(0, 8), model="toy"))
        await asyncio.sleep(0.05)
        return answer, _sample(server, "tandem_generated_tokens_total", model="toy"), \
            _sample(server, "tandem_prompt_tokens_total", model="toy")

    answer, generated, prompt = run_with_server(_config(tiny_llama), engine, body)
    assert generated == answer.usage.completion_tokens == 8
    assert prompt == answer.usage.prompt_tokens > 0
