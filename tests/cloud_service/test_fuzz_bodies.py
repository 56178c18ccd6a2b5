"""Seeded fuzzing of Generate's request body against a running replica (the CPU engine over a toy model) and a
gateway in front of it, both on loopback: random bytes, truncated and bit-flipped requests, with and without
an API key. Without a key every call is UNAUTHENTICATED whatever the body; with one, a body that does not
parse is INVALID_ARGUMENT, and one that happens to parse gets the status its fields earn. No call gets
UNKNOWN or INTERNAL, both servers stay healthy and serve a real request afterwards, and memory stays flat."""

from __future__ import annotations

import asyncio
import os
import random

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_service.auth import hash_key
from cloud_service.config import FrontDoorConfig, ModelConfig, ServerConfig, TenantConfig
from cloud_service.gateway import GatewayConfig, GatewayServer, GatewaySettings
from cloud_service.server import ReplicaServer
from cloud_service.servicer import ServedModel
from cloud_service.wire.v1 import inference_pb2 as pb

GENERATE = "/tandem.v1.Inference/Generate"
KEY, GATEWAY_KEY = "tdm_fuzz_caller", "tdm_fuzz_gateway"
UNLIMITED = {"requests_per_minute": 10**7, "tokens_per_minute": 10**10}
BODIES = 400
"""Bodies per server and per key case: enough to reach the decoder's odd corners, bounded in time."""
WARMUP = 50
RSS_GROWTH_LIMIT = 16 * 2**20
"""What 2 x BODIES calls may add to the process's resident memory (allocator noise, not a leak)."""
ANSWERED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.OK}
"""Statuses a body that parses may earn with a valid key: its model, tenant or fields are wrong, or a bit flip
left a valid request (another prompt) that is answered."""


@pytest.fixture(scope="module")
def engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine

    engine = CpuEngine(tiny_llama, name="toy", version="v1")
    yield engine
    engine.close()


def _bodies(seed: int) -> list[bytes]:
    """Random bytes, truncations and bit flips of a valid request, and invalid UTF-8 in a string field."""
    rng = random.Random(seed)
    valid = pb.GenerateRequest(request_id="fuzz", model="toy", prompt="Hello there",
                               sampling=pb.SamplingParams(max_tokens=2)).SerializeToString()
    bodies: list[bytes] = []
    for index in range(BODIES):
        kind = index % 4
        if kind == 0:
            bodies.append(rng.randbytes(rng.randint(1, 300)))
        elif kind == 1:
            bodies.append(valid[:rng.randint(1, len(valid) - 1)])
        elif kind == 2:
            flipped = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            bodies.append(bytes(flipped))
        else:  # field 1 (request_id) with bytes that are not UTF-8
            junk = rng.randbytes(rng.randint(1, 20)) + b"\xff"
            bodies.append(b"\x0a" + bytes([len(junk)]) + junk)
    return bodies


def _parses(body: bytes) -> bool:
    try:
        pb.GenerateRequest.FromString(body)
    except DecodeError:
        return False
    return True


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _call(channel: grpc.aio.Channel, body: bytes, key: str | None) -> grpc.StatusCode:
    generate = channel.unary_stream(GENERATE)  # no serializers: the body goes as given
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    try:
        async for _ in generate(body, metadata=metadata, timeout=10):
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _fuzz(target: str, key: str, seed: int) -> tuple[list[tuple[bytes, str | None, grpc.StatusCode]], int]:
    bodies = _bodies(seed)
    async with grpc.aio.insecure_channel(target) as channel:
        for body in bodies[:WARMUP]:
            await _call(channel, body, key)
        before = _rss()
        outcomes = []
        for body in bodies:
            for given in (None, key):
                outcomes.append((body, given, await _call(channel, body, given)))
        grown = _rss() - before
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        real = pb.GenerateRequest(request_id="after-fuzz", model="toy", prompt="Hello",
                                  sampling=pb.SamplingParams(max_tokens=3, ignore_eos=True))
        stub_call = channel.unary_stream(GENERATE, request_serializer=pb.GenerateRequest.SerializeToString,
                                         response_deserializer=pb.GenerateChunk.FromString)
        chunks = [c async for c in stub_call(real, metadata=(("authorization", f"Bearer {key}"),), timeout=30)]
        assert sum(len(c.token_ids) for c in chunks) == 3
    return outcomes, grown


def _check(outcomes: list[tuple[bytes, str | None, grpc.StatusCode]]) -> None:
    unparsed = 0
    for body, key, code in outcomes:
        if key is None:
            assert code == grpc.StatusCode.UNAUTHENTICATED, (body, code)
        elif not _parses(body):
            unparsed += 1
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (body, code)
        else:
            assert code in ANSWERED, (body, code)
    assert unparsed > BODIES // 4  # the fuzz did reach the decoder


def test_fuzzed_bodies_get_unauthenticated_or_invalid_argument_from_a_replica_and_a_gateway(tiny_llama, engine):
    async def main():
        replica = ReplicaServer(ServerConfig(
            models=(ModelConfig("toy", tiny_llama, version="v1"),),
            front_door=FrontDoorConfig(host="127.0.0.1", port=0, tenants=(
                TenantConfig("acme", hash_key(KEY), **UNLIMITED),
                TenantConfig("gateway", hash_key(GATEWAY_KEY), **UNLIMITED)))),
            models=[ServedModel("toy", "v1", engine)])
        await replica.start()
        gateway = GatewayServer(GatewayConfig(
            gateway=GatewaySettings(replicas=(f"127.0.0.1:{replica.port}",), replica_api_key=GATEWAY_KEY,
                                    load_refresh_s=0.05, health_interval_s=0.1),
            front_door=FrontDoorConfig(host="127.0.0.1", port=0,
                                       tenants=(TenantConfig("acme", hash_key(KEY), **UNLIMITED),))))
        await gateway.start()
        try:
            while not gateway.membership.available():
                await asyncio.sleep(0.01)
            direct = await _fuzz(f"127.0.0.1:{replica.port}", KEY, seed=1)
            through = await _fuzz(f"127.0.0.1:{gateway.port}", KEY, seed=2)
            return direct, through
        finally:
            await gateway.stop(0.1)
            await replica.stop(0.1, close_engines=False)

    (direct, direct_growth), (through, through_growth) = asyncio.run(main())
    _check(direct)
    _check(through)
    assert direct_growth < RSS_GROWTH_LIMIT and through_growth < RSS_GROWTH_LIMIT, (direct_growth, through_growth)
