"""End to end through the gateway to a real CPU-engine replica over a toy model: the answers equal the engine's
own, abort by id reaches the replica running the request, a caller leaving frees the replica's slot, callers
are authenticated at the gateway (which uses its own key upstream), and GetLoad/ListModels/health answer."""

from __future__ import annotations

import asyncio
import random

import pytest

from cloud_service.client import CloudClient
from cloud_service.config import FrontDoorConfig, Limits, ModelConfig, ServerConfig
from cloud_service.errors import AuthenticationError, PermissionDeniedError
from cloud_service.gateway import GatewayServer
from cloud_service.server import ReplicaServer
from cloud_service.servicer import ServedModel
from edge_runtime import FinishReason, collect
from tests.cloud_service.gateway.support import (
    ACME_KEY,
    GATEWAY_KEY,
    REPLICA_TENANTS,
    chat,
    gateway_config,
    wait_until,
)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    engine = CpuEngine(tiny_llama, name="toy", version="v1", options=CpuEngineOptions(max_running=8))
    yield engine
    engine.close()


def test_a_cpu_replica_behind_the_gateway_answers_aborts_and_frees_slots(tiny_llama, engine):
    config = ServerConfig(models=(ModelConfig("toy", tiny_llama, version="v1"),), front_door=FrontDoorConfig(
        port=0, tenants=REPLICA_TENANTS, limits=Limits(max_prompt_tokens=256, max_tokens=200)))

    async def main():
        direct = [await collect(engine.generate(chat(i, tokens=12, words=5))) for i in range(6)]
        replica = ReplicaServer(config, models=[ServedModel("toy", "v1", engine)])
        await replica.start()
        gateway = GatewayServer(gateway_config([f"127.0.0.1:{replica.port}"]), rng=random.Random(0))
        await gateway.start()
        try:
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY) as cloud:
                remote = await asyncio.gather(*(collect(cloud.generate(chat(i, tokens=12, words=5), model="toy"))
                                                for i in range(6)))
                request = chat(0, tokens=150, words=5)
                events = []
                async for event in cloud.generate(request, model="toy"):
                    events.append(event)
                    if len(events) == 2:
                        assert await cloud.abort(request.request_id)
                stream = cloud.generate(chat(1, tokens=150, words=5), model="toy")
                async for _ in stream:
                    break
                await stream.aclose()  # the caller leaves: the gateway cancels upstream, the replica frees the slot
                await wait_until(lambda: engine.running == 0 and not replica.inference.inflight
                                 and not gateway.inference.inflight, what="the slot to be freed")
                load, models = await cloud.get_load(), await cloud.list_models()
                ready = await cloud.health("tandem.v1.Inference")
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=GATEWAY_KEY) as stranger:
                with pytest.raises(AuthenticationError):  # the gateway's replica key is no caller key
                    await collect(stranger.generate(chat(0), model="toy"))
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY, tenant="globex") as impostor:
                with pytest.raises(PermissionDeniedError, match="belongs to tenant 'acme'"):
                    await collect(impostor.generate(chat(0), model="toy"))
            return direct, remote, events, load, models, ready
        finally:
            await gateway.stop(0.1)
            await replica.stop(0.1, close_engines=False)

    direct, remote, events, load, models, ready = asyncio.run(main())
    assert [c.token_ids for c in remote] == [c.token_ids for c in direct]
    assert [c.text for c in remote] == [c.text for c in direct]
    assert events[-1].finish_reason is FinishReason.ABORT and len(events) < 150
    assert load.max_running == 8
    assert [(m.name, m.version, m.engine) for m in models] == [("toy", "v1", "cpu")]
    assert ready
