"""A real replica on a loopback port with the CPU engine over a toy model, driven by the real client:
streams, cancellation, auth, quotas, limits, invalid input, drain, deadlines, engine failure, health,
reflection, metrics and TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from cloud_service.auth import hash_key
from cloud_service.client import CloudClient
from cloud_service.config import FrontDoorConfig, Limits, ModelConfig, ServerConfig, TenantConfig
from cloud_service.errors import (
    AuthenticationError,
    CloudDrainingError,
    CloudTimeoutError,
    InvalidArgumentError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    StreamInterruptedError,
)
from cloud_service.server import ReplicaServer
from cloud_service.servicer import ServedModel
from edge_runtime import FinishReason, GenerationRequest, Message, SamplingParams, collect

KEY, OTHER_KEY = "tdm_acme_key", "tdm_globex_key"
TENANTS = (
    TenantConfig("acme", hash_key(KEY)),
    TenantConfig("globex", hash_key(OTHER_KEY), requests_per_minute=2, models=("other-model",)),
)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    engine = CpuEngine(tiny_llama, name="toy", version="v1", options=CpuEngineOptions(max_running=16))
    yield engine
    engine.close()


def _config(tiny_llama, distribution: Any = None, **front_door: Any) -> ServerConfig:
    """The test replica's config; ``front_door`` replaces fields of its front door (tenants, limits...)."""
    door = FrontDoorConfig(host="127.0.0.1", port=0, tenants=TENANTS,
                           limits=Limits(max_prompt_tokens=256, max_tokens=64))
    base = ServerConfig(models=(ModelConfig("toy", tiny_llama, version="v1"),),
                        front_door=dataclasses.replace(door, **front_door))
    return dataclasses.replace(base, distribution=distribution) if distribution is not None else base


def _request(index: int = 0, tokens: int = 16, **fields: Any) -> GenerationRequest:
    sampling = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    return GenerationRequest(messages=[Message("user", f"Tell me about {index} " + "things " * (index % 5))],
                             sampling=sampling, **fields)


def run_with_server(config: ServerConfig, engine, body: Callable[[ReplicaServer, str], Awaitable[Any]]) -> Any:
    async def main():
        server = ReplicaServer(config, models=[ServedModel("toy", "v1", engine)])
        port = await server.start()
        try:
            return await body(server, f"127.0.0.1:{port}")
        finally:
            await server.stop(0.1, close_engines=False)

    return asyncio.run(main())


def generate_refusal(config: ServerConfig, engine, mutate: Callable[[Any], None]) -> grpc.aio.AioRpcError:
    """The error a replica answers a raw Generate with: the toy request's wire form, changed by ``mutate``."""
    from cloud_service.convert import request_to_wire
    from cloud_service.wire.v1 import inference_pb2_grpc

    async def body(server, target):
        wire = request_to_wire(_request(), model="toy")
        mutate(wire)
        async with grpc.aio.insecure_channel(target) as channel:
            call = inference_pb2_grpc.InferenceStub(channel).Generate(
                wire, metadata=(("authorization", f"Bearer {KEY}"),), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
        return caught.value

    return run_with_server(config, engine, body)


def test_32_concurrent_streams_complete_and_each_equals_the_engine_direct_output(tiny_llama, engine):
    async def body(server, target):
        direct = [await collect(engine.generate(_request(i))) for i in range(32)]
        async with CloudClient(target, api_key=KEY) as cloud:
            remote = await asyncio.gather(*(collect(cloud.generate(_request(i), model="toy")) for i in range(32)))
        return direct, remote

    direct, remote = run_with_server(_config(tiny_llama), engine, body)
    assert [c.token_ids for c in remote] == [c.token_ids for c in direct]
    assert [c.text for c in remote] == [c.text for c in direct]
    remote_logprobs = [lp for c in remote for lp in c.logprobs]
    assert remote_logprobs == pytest.approx([lp for c in direct for lp in c.logprobs], abs=1e-4)  # batching numerics
    assert all(c.usage.completion_tokens == 16 and c.finish_reason is FinishReason.LENGTH for c in remote)


def test_cancelling_mid_stream_frees_the_slot(tiny_llama, engine):
    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            stream = cloud.generate(_request(0, 64), model="toy")
            async for _ in stream:
                break
            await stream.aclose()
            for _ in range(200):
                load = await cloud.get_load()
                if load.running == 0 and not server.inference.inflight:
                    return load
                await asyncio.sleep(0.01)
            return load

    load = run_with_server(_config(tiny_llama), engine, body)
    assert load.running == 0 and load.max_running == 16


def test_abort_by_id_ends_the_stream_with_abort(tiny_llama, engine):
    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            request = _request(0, 64)
            events = []
            async for event in cloud.generate(request, model="toy"):
                events.append(event)
                if len(events) == 2:
                    assert await cloud.abort(request.request_id)
            assert not await cloud.abort("no-such-id")
            return events

    events = run_with_server(_config(tiny_llama), engine, body)
    assert events[-1].finish_reason is FinishReason.ABORT and len(events) < 64


@pytest.mark.parametrize(
    ("key", "fields", "error", "message"),
    [
        (None, {}, AuthenticationError, "missing API key"),
        ("wrong", {}, AuthenticationError, "unknown API key"),
        (KEY, {"tenant": "globex"}, PermissionDeniedError, "belongs to tenant 'acme'"),
        (OTHER_KEY, {}, PermissionDeniedError, "may not use model 'toy'"),
    ],
)
def test_auth_failures_have_their_status(tiny_llama, engine, key, fields, error, message):
    async def body(server, target):
        async with CloudClient(target, api_key=key, tenant=fields.get("tenant", "")) as cloud:
            with pytest.raises(error, match=message):
                await collect(cloud.generate(_request(), model="toy"))
            return await cloud.health()  # health needs no key

    assert run_with_server(_config(tiny_llama), engine, body)


def test_quota_exhaustion_says_when_to_retry(tiny_llama, engine):
    tenants = (TenantConfig("acme", hash_key(KEY), requests_per_minute=2),)

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            for _ in range(2):
                await collect(cloud.generate(_request(tokens=2), model="toy"))
            with pytest.raises(RateLimitedError, match="over its quota") as caught:
                await collect(cloud.generate(_request(tokens=2), model="toy"))
            return caught.value

    error = run_with_server(_config(tiny_llama, tenants=tenants), engine, body)
    assert 0 < error.retry_after_s <= 31


def test_token_quota_is_charged_by_usage(tiny_llama, engine):
    tenants = (TenantConfig("acme", hash_key(KEY), tokens_per_minute=40),)

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            await collect(cloud.generate(_request(tokens=32), model="toy"))  # prompt + 32 > 40: into debt
            with pytest.raises(RateLimitedError):
                await collect(cloud.generate(_request(tokens=2), model="toy"))

    run_with_server(_config(tiny_llama, tenants=tenants), engine, body)


@pytest.mark.parametrize(
    ("request_", "model", "error", "message"),
    [
        (GenerationRequest(prompt="word " * 400), "toy", InvalidArgumentError, "limits.max_prompt_tokens"),
        (GenerationRequest(prompt="x" * 5000), "toy", InvalidArgumentError, "limits.max_message_bytes"),
        (_request(), "missing-model", ModelNotFoundError, "not served here"),
    ],
    ids=["prompt-too-long", "message-too-big", "unknown-model"],
)
def test_limits_and_unknown_models(tiny_llama, engine, request_, model, error, message):
    limits = Limits(max_prompt_tokens=256, max_tokens=64, max_message_bytes=4096)

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            with pytest.raises(error, match=message):
                await collect(cloud.generate(request_, model=model))
            # the server stays up and serves the next request
            return await collect(cloud.generate(_request(tokens=3), model="toy"))

    assert run_with_server(_config(tiny_llama, limits=limits), engine, body).usage.completion_tokens == 3


def test_max_tokens_is_capped_at_the_server_limit(tiny_llama, engine):
    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            return await collect(cloud.generate(_request(tokens=500), model="toy"))

    assert run_with_server(_config(tiny_llama), engine, body).usage.completion_tokens == 64


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: w.ClearField("request_id"), "request_id is empty"),
        (lambda w: w.ClearField("input"), "input is empty"),
        (lambda w: setattr(w.sampling, "temperature", -1.0), "sampling.temperature must be"),
        (lambda w: setattr(w.sampling, "top_p", 2.0), "sampling.top_p must lie"),
        (lambda w: w.chat.messages[0].__setattr__("role", "robot"), "chat.messages[0].role 'robot'"),
    ],
)
def test_malformed_requests_are_invalid_argument_naming_the_field(tiny_llama, engine, mutate, message):
    error = generate_refusal(_config(tiny_llama), engine, mutate)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_a_deadline_cancels_the_request_on_the_server(tiny_llama, engine):
    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            with pytest.raises((CloudTimeoutError, StreamInterruptedError)):
                await collect(cloud.generate(_request(0, 10_000), model="toy", timeout=0.05))
            for _ in range(200):
                if engine.running == 0 and not server.inference.inflight:
                    return True
                await asyncio.sleep(0.01)
            return False

    limits = Limits(max_prompt_tokens=256, max_tokens=100_000)
    assert run_with_server(_config(tiny_llama, limits=limits), engine, body)


def test_drain_lets_streams_finish_refuses_new_ones_and_reports_not_serving(tiny_llama, engine):
    from cloud_service.server import INFERENCE_SERVICE

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            running = asyncio.create_task(collect(cloud.generate(_request(0, 64), model="toy")))
            while not server.inference.inflight:
                await asyncio.sleep(0.005)
            drained = asyncio.create_task(server.drain(timeout_s=30))
            await asyncio.sleep(0.01)
            with pytest.raises(CloudDrainingError, match="draining"):
                await collect(cloud.generate(_request(1, 4), model="toy"))
            ready, alive = await cloud.health(INFERENCE_SERVICE), await cloud.health("")
            return await running, await drained, ready, alive, (await cloud.get_load()).draining

    completion, drained, ready, alive, draining = run_with_server(_config(tiny_llama), engine, body)
    assert completion.usage.completion_tokens == 64  # the in-flight stream finished whole
    assert drained and not ready and alive and draining


def test_an_engine_failure_mid_stream_ends_with_a_status_and_the_server_stays_up(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine

    doomed = CpuEngine(tiny_llama, name="toy", version="v1")

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            events = []
            with pytest.raises(StreamInterruptedError) as caught:
                async for event in cloud.generate(_request(0, 64), model="toy"):
                    events.append(event)
                    if len(events) == 3:
                        await asyncio.to_thread(doomed.close)  # the engine dies under the stream
            models = await cloud.list_models()
            return caught.value, events, models

    error, events, models = run_with_server(_config(tiny_llama), doomed, body)
    assert error.delivered_tokens == len(events) >= 3
    assert error.code == "UNAVAILABLE"
    assert [m.name for m in models] == ["toy"]


def test_list_models_health_reflection_and_metrics(tiny_llama, engine):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            await collect(cloud.generate(_request(tokens=4), model="toy"))
            models = await cloud.list_models()
            stub = reflection_pb2_grpc.ServerReflectionStub(cloud.channel)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            services = [s.name async for r in responses for s in r.list_services_response.service]
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        return models, services, metrics

    models, services, metrics = run_with_server(_config(tiny_llama, metrics_port=_free_port()), engine, body)
    assert (models[0].name, models[0].version, models[0].engine) == ("toy", "v1", "cpu")
    assert {"tandem.v1.Inference", "grpc.health.v1.Health"} <= set(services)
    assert 'tandem_requests_total{model="toy",status="OK"}' in metrics
    assert "tandem_time_to_first_token_seconds_bucket" in metrics
    assert 'tandem_running_requests{model="toy"}' in metrics


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_replica_configured_with_bundles_serves_them_to_devices(tiny_llama, engine, bundles, signing_key, tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from cloud_service.config import DistributionConfig
    from cloud_service.distribution import download_bundle
    from cloud_service.server import DISTRIBUTION_SERVICE

    public = tmp_path / "team.pub"
    public.write_bytes(signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    source = bundles("llama", "gguf", "q8_0")
    config = _config(tiny_llama, distribution=DistributionConfig({"toy-q8": (source,)}, (public,)))

    async def body(server, target):
        async with CloudClient(target, api_key=KEY) as cloud:
            ready = await cloud.health(DISTRIBUTION_SERVICE)
            manifest = await download_bundle(cloud.channel, "toy-q8", tmp_path / "device" / "toy-q8",
                                             [signing_key.public_key()],
                                             metadata=(("authorization", f"Bearer {KEY}"),))
        return ready, manifest

    ready, manifest = run_with_server(config, engine, body)
    assert ready and manifest.quantization == "q8_0"
    assert (tmp_path / "device" / "toy-q8" / "model.gguf").read_bytes() == (source / "model.gguf").read_bytes()


def test_chunks_are_sent_less_often_as_more_streams_are_in_flight():
    from cloud_service.metrics import ServerMetrics
    from cloud_service.servicer import CHUNK_INTERVAL_S, CHUNK_RATE_BUDGET, InferenceServicer

    servicer = InferenceServicer([], limits=Limits(), metrics=ServerMetrics())
    assert servicer.chunk_interval() == CHUNK_INTERVAL_S
    servicer.inflight.update({f"acme/{i}": None for i in range(64)})  # type: ignore[misc]
    assert 64 / CHUNK_RATE_BUDGET > CHUNK_INTERVAL_S
    assert servicer.chunk_interval() == pytest.approx(64 / CHUNK_RATE_BUDGET)
