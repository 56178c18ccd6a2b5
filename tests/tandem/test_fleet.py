"""LocalFleet: real replicas behind the real gateway on loopback; kills, restarts and the bundle catalog (CPU
engines over a tiny model); any engine from a ModelFactory, and the gateway started again with other settings
in front of some of the replicas (the load simulator)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_service.client import CloudClient
from cloud_service.config import DistributionConfig
from cloud_service.distribution.service import SERVICE_NAME as DISTRIBUTION_SERVICE
from cloud_service.engines.cpu import CpuEngineOptions
from cloud_service.errors import CloudError
from edge_runtime.types import GenerationRequest, Message, SamplingParams
from tandem.fleet import FleetSettings, LocalFleet, simulator_model

KEY = "sk-local-fleet-test"


def _request(text: str, tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),),
                             sampling=SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True))


async def _generate(target: str, text: str, tokens: int = 8) -> str:
    async with CloudClient(target, api_key=KEY) as client:
        return "".join([event.text async for event in client.generate(_request(text, tokens), model="toy")])


async def _eventually(call, attempts: int = 20):
    """``call()``, retried while the channel is in gRPC's reconnect backoff after the outage (bounded)."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except CloudError:
            await asyncio.sleep(0.25)
    return await call()


async def _health(target: str, service: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return reply.status


def test_fleet_serves_survives_a_killed_replica_and_goes_offline(tiny_llama: Path, bundles, signing_key,
                                                                 tmp_path: Path) -> None:
    bundle = bundles("llama", "gguf", "q8_0")
    public_key = tmp_path / "release.pub"
    public_key.write_bytes(signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    async def scenario() -> None:
        fleet = LocalFleet(tiny_llama, model="toy", api_key=KEY, replicas=2,
                           engine_options=CpuEngineOptions(max_running=4),
                           distribution=DistributionConfig({"toy": (bundle,)}, (public_key,)))
        async with fleet:
            first = await _generate(fleet.target, "hello there")
            assert first
            assert fleet.streaming_replicas() == []
            async with CloudClient(fleet.target, api_key=KEY) as client:
                stream = client.generate(_request("a long one", tokens=200), model="toy")
                await anext(stream)  # the first token: the stream is in flight on exactly one replica
                [serving] = fleet.streaming_replicas()
                assert [event async for event in stream]  # the rest of the answer
            assert fleet.streaming_replicas() == []
            assert fleet.replicas[serving].inference.inflight == {}
            assert await _health(fleet.target, DISTRIBUTION_SERVICE) == health_pb2.HealthCheckResponse.SERVING
            await fleet.kill_replica(0)
            assert fleet.live_replicas == 1
            for _ in range(3):  # the gateway retries before the first token on the live replica
                assert await _generate(fleet.target, "hello there") == first
            await fleet.restart_replica(0)
            assert fleet.live_replicas == 2
            target = fleet.target
            await fleet.stop_gateway()
            with pytest.raises(CloudError):
                await _generate(target, "hello there")
            assert await fleet.start_gateway() == target
            assert await _eventually(lambda: _generate(target, "hello there")) == first
        assert fleet.engines == [] and fleet.gateway is None

    asyncio.run(scenario())


def test_fleet_needs_a_replica(tiny_llama: Path) -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        LocalFleet(tiny_llama, model="toy", api_key=KEY, replicas=0)


def test_a_fleet_of_simulators_restarts_its_gateway_with_other_settings_before_some_replicas() -> None:
    versions = ("v1", "v2", "v1")
    fleet = LocalFleet(model="sim", api_key=KEY, replicas=3,
                       engines=lambda index: simulator_model(model="sim", version=versions[index],
                                                             options={"decode_step_s": 0.001}),
                       settings=FleetSettings(gateway={"policy": "round_robin"}, seed=0, replica_key="tdm_fleet"))

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        async with fleet:
            served = [m.version for m in fleet.models]
            assert fleet.gateway is not None and fleet.gateway.config.gateway.policy == "round_robin"
            target = fleet.target
            await fleet.stop_gateway()
            await fleet.start_gateway({"policy": "least_loaded"}, replicas=[1])
            assert fleet.target == target and fleet.gateway.config.gateway.policy == "least_loaded"
            async with CloudClient(target, api_key=KEY) as client:
                answers = [[e async for e in client.generate(_request(f"q{i}", 4), model="sim",
                                                             on_serving=lambda v, _: seen.append(v))]
                           for i in range(3)]
            assert all(answers)
            return served, seen, fleet.gateway.config.gateway.replicas

    seen: list[str] = []
    served, versions_seen, members = asyncio.run(scenario())
    assert served == list(versions)
    assert set(versions_seen) == {"v2"}  # only replica 1 (v2) is behind the second gateway
    assert members == (fleet.addresses[1],)
