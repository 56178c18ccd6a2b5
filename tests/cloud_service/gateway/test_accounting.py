"""The gateway charges and counts every call however it ends (simulator replicas on loopback): cancelling
streams in a loop ends in RESOURCE_EXHAUSTED, streamed tokens of cancelled calls are in the metrics,
refusals before any replica are counted by status, and GetLoad shows a stream that ended at once."""

from __future__ import annotations

import asyncio
import random

import grpc

from cloud_service.auth import hash_key
from cloud_service.channel import bearer_metadata
from cloud_service.client import CloudClient
from cloud_service.config import FrontDoorConfig, TenantConfig
from cloud_service.convert import request_to_wire
from cloud_service.errors import RateLimitedError
from cloud_service.gateway import GatewayConfig, GatewayServer, GatewaySettings
from cloud_service.server import ReplicaServer
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc
from tests.cloud_service.gateway.support import ACME_KEY, FAST_GATEWAY, MODEL, chat, replica_config, wait_until

THRIFTY = TenantConfig("acme", hash_key(ACME_KEY), tokens_per_minute=150)


async def _fleet(**settings) -> tuple[ReplicaServer, GatewayServer]:
    replica = ReplicaServer(replica_config(decode_step_s=0.01))
    await replica.start()
    gateway = GatewayServer(GatewayConfig(
        gateway=GatewaySettings(replicas=(f"127.0.0.1:{replica.port}",), **(FAST_GATEWAY | settings)),
        front_door=FrontDoorConfig(host="127.0.0.1", port=0, tenants=(THRIFTY,))), rng=random.Random(0))
    await gateway.start()
    await wait_until(lambda: bool(gateway.membership.available()), what="the replica to be admitted")
    return replica, gateway


async def _close(replica: ReplicaServer, gateway: GatewayServer) -> None:
    await gateway.stop(0.1)
    await replica.stop(0.1)


def _sample(gateway: GatewayServer, name: str, **labels: str) -> float:
    return gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def test_cancelling_streams_in_a_loop_at_the_gateway_ends_in_resource_exhausted():
    async def main():
        replica, gateway = await _fleet()
        try:
            served, refused = 0, None
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY) as cloud:
                for index in range(12):  # bounded: 150 tokens a minute cannot pay for 12 x (prompt + 12)
                    stream = cloud.generate(chat(index, tokens=200), model=MODEL)
                    try:
                        received = 0
                        async for event in stream:
                            received += event.token_id is not None
                            if received >= 12:
                                break
                    except RateLimitedError as exc:
                        refused = exc
                        break
                    finally:
                        await stream.aclose()
                    served += 1
                    await wait_until(lambda: not gateway.inference.inflight, what="the gateway to see the cancel")
            await asyncio.sleep(0.05)
            return (served, refused, _sample(gateway, "tandem_gateway_generated_tokens_total", model=MODEL,
                                             version="v1"),
                    _sample(gateway, "tandem_gateway_requests_total", model=MODEL, version="v1",
                            replica=f"127.0.0.1:{replica.port}", status="CANCELLED"))
        finally:
            await _close(replica, gateway)

    served, refused, generated, cancelled = asyncio.run(main())
    assert refused is not None and refused.retry_after_s and refused.retry_after_s > 0
    assert 1 <= served < 12 and cancelled == served
    assert generated >= 12 * served


def test_refusals_at_the_gateway_are_counted_by_status():
    async def main():
        replica, gateway = await _fleet()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                stub = inference_pb2_grpc.InferenceStub(channel)
                codes = []
                for request, key in ((request_to_wire(chat(0), model=MODEL), None),
                                     (request_to_wire(chat(0), model="nope"), ACME_KEY),
                                     (pb.GenerateRequest(model=MODEL, prompt="no id"), ACME_KEY)):
                    try:
                        async for _ in stub.Generate(request, metadata=bearer_metadata(key), timeout=10):
                            pass
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code())
            await asyncio.sleep(0.05)
            counted = [_sample(gateway, "tandem_gateway_requests_total", model=model, version="", replica="",
                               status=status)
                       for model, status in (("", "UNAUTHENTICATED"), ("nope", "NOT_FOUND"),
                                             (MODEL, "INVALID_ARGUMENT"))]
            return codes, counted
        finally:
            await _close(replica, gateway)

    codes, counted = asyncio.run(main())
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT]
    assert counted == [1, 1, 1]


def test_the_gateways_load_shows_a_stream_that_ended_before_the_next_poll():
    async def main():
        replica, gateway = await _fleet(load_refresh_s=2.0)
        try:
            member = next(iter(gateway.membership.replicas.values()))
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY) as cloud:
                stream = cloud.generate(chat(0, tokens=2000), model=MODEL)
                async for _ in stream:
                    if member.load is not None and member.load.running == 1:
                        break
                    await asyncio.sleep(0.01)
                during = await cloud.get_load()
                await stream.aclose()
                await wait_until(lambda: not gateway.inference.inflight, what="the stream to end")
                after = await cloud.get_load()
                still_reported = member.load.running if member.load is not None else None
            return during, after, still_reported
        finally:
            await _close(replica, gateway)

    during, after, still_reported = asyncio.run(main())
    assert during.running == 1
    assert still_reported == 1  # the last poll still says so...
    assert after.running == 0 and after.waiting == 0  # ...but the gateway knows its own stream ended
