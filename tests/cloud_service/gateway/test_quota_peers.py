"""Several gateways in front of the same replicas split each tenant's quota: with N peers found at
``quota_peers_dns`` each enforces 1/N, so a tenant's total stays what its config says."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from cloud_service.auth import hash_key
from cloud_service.config import FrontDoorConfig, TenantConfig
from cloud_service.gateway import GatewayConfig, GatewayServer, GatewaySettings
from cloud_service.gateway.quota_peers import QuotaPeers
from cloud_service.quota import Quotas
from cloud_service.server import ReplicaServer
from tests.cloud_service.gateway.support import FAST_GATEWAY, chat, raw_generate, replica_config

TENANT = TenantConfig("acme", hash_key("tdm_quota_acme"), requests_per_minute=60, tokens_per_minute=10**9)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _admitted(quotas: Quotas, attempts: int) -> int:
    return sum(quotas.admit(TENANT) == 0 for _ in range(attempts))


def test_a_share_scales_the_bucket_and_its_refill() -> None:
    clock = Clock()
    quotas = Quotas(clock)
    quotas.set_share(1 / 3)
    assert _admitted(quotas, 100) == 20  # a third of 60 requests per minute
    clock.now += 30.0
    assert _admitted(quotas, 100) == 10  # refilled at a third of the rate
    quotas.set_share(1.0)  # a peer left: the whole quota from now on, without a free refill
    assert _admitted(quotas, 100) == 0
    clock.now += 30.0
    assert _admitted(quotas, 100) == 30
    with pytest.raises(ValueError, match="share"):
        quotas.set_share(0.0)


def test_a_tiny_share_still_lets_one_request_through() -> None:
    quotas = Quotas(Clock(), share=1 / 1000)
    assert _admitted(quotas, 5) == 1


def test_peers_are_counted_at_each_refresh_and_a_failed_lookup_keeps_the_count() -> None:
    answers: list[object] = [["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"], OSError("no DNS"), [], ["10.0.0.1:1"] * 2]

    async def resolver(name: str) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]

    quotas = Quotas(Clock())
    peers = QuotaPeers("gateways.internal:50051", quotas, 1.0, resolver)

    async def main() -> list[tuple[int, float]]:
        seen = []
        for _ in range(4):
            seen.append((await peers.refresh(), quotas.share))
        return seen

    assert asyncio.run(main()) == [(3, 1 / 3), (3, 1 / 3), (1, 1.0), (2, 0.5)]


def test_a_gateway_with_quota_peers_enforces_its_share_end_to_end() -> None:
    """A real lookup of a literal address finds one gateway: it enforces the whole quota (4 per minute)."""
    tenant = TenantConfig("acme", hash_key("tdm_quota_acme"), requests_per_minute=4, tokens_per_minute=10**9)

    async def main():
        replica = ReplicaServer(replica_config())
        await replica.start()
        settings = GatewaySettings(replicas=(f"127.0.0.1:{replica.port}",), quota_peers_dns="127.0.0.1:9",
                                   **FAST_GATEWAY)
        front_door = FrontDoorConfig(host="127.0.0.1", port=0, tenants=(tenant,))
        gateway = GatewayServer(GatewayConfig(gateway=settings, front_door=front_door),
                                rng=random.Random(0))
        await gateway.start()
        try:
            results = [await raw_generate(f"127.0.0.1:{gateway.port}", chat(i, tokens=2), key="tdm_quota_acme")
                       for i in range(5)]
            return results, gateway.quota_peers.peers, gateway.quotas.share
        finally:
            await gateway.stop(0.1)
            await replica.stop(0.1)

    results, peers, share = asyncio.run(main())
    assert [r.code for r in results] == [grpc.StatusCode.OK] * 4 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert "retry-after-ms" in results[-1].trailing and (peers, share) == (1, 1.0)
