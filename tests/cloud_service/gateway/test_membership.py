"""Membership: replicas found through DNS (as behind a Kubernetes headless Service), an address where nothing
answers is ejected while the rest of the fleet serves, and a refused replica key is named in callers' errors."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from cloud_service.client import CloudClient
from cloud_service.config import FrontDoorConfig
from cloud_service.errors import CloudUnavailableError
from cloud_service.gateway import GatewayConfig, GatewayServer, GatewaySettings
from cloud_service.gateway.membership import ReplicaState, resolve
from cloud_service.server import ReplicaServer
from edge_runtime import collect
from tests.cloud_service.gateway.support import (
    ACME_KEY,
    CALLER_TENANTS,
    FAST_GATEWAY,
    MODEL,
    chat,
    gateway_config,
    replica_config,
    running_fleet,
    wait_until,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens there


def test_dns_discovery_admits_every_address_of_the_name_that_answers():
    async def main():
        replica = ReplicaServer(replica_config())
        await replica.start()
        name = f"localhost:{replica.port}"
        settings = GatewaySettings(discovery_dns=name, dns_refresh_s=0.1, **FAST_GATEWAY)
        front_door = FrontDoorConfig(port=0, tenants=CALLER_TENANTS)
        gateway = GatewayServer(GatewayConfig(gateway=settings, front_door=front_door),
                                rng=random.Random(0))
        await gateway.start()
        try:
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY) as cloud:
                answer = await collect(cloud.generate(chat(0, tokens=3), model=MODEL))
            states = {a: r.state for a, r in gateway.membership.replicas.items()}
            return await resolve(name), states, answer, replica.port
        finally:
            await gateway.stop(0.1)
            await replica.stop(0.1)

    addresses, states, answer, port = asyncio.run(main())
    assert f"127.0.0.1:{port}" in addresses
    assert set(states) == set(addresses)
    assert states[f"127.0.0.1:{port}"] is ReplicaState.ADMITTED
    assert answer.usage.completion_tokens == 3


def test_an_address_where_nothing_answers_is_ejected_and_the_fleet_serves_on():
    async def main():
        replica = ReplicaServer(replica_config())
        await replica.start()
        dead = f"127.0.0.1:{_closed_port()}"
        gateway = GatewayServer(gateway_config([f"127.0.0.1:{replica.port}", dead], policy="round_robin"),
                                rng=random.Random(0))
        await gateway.start()
        try:
            member = gateway.membership.replicas[dead]
            await wait_until(lambda: member.state is ReplicaState.EJECTED, what="the dead address to be ejected")
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY) as cloud:
                answers = await asyncio.gather(*(collect(cloud.generate(chat(i, tokens=2), model=MODEL))
                                                 for i in range(6)))
            return answers, gateway.metrics.registry.get_sample_value(
                "tandem_gateway_replicas", {"state": "available"})
        finally:
            await gateway.stop(0.1)
            await replica.stop(0.1)

    answers, available = asyncio.run(main())
    assert all(a.usage.completion_tokens == 2 for a in answers)
    assert available == 1


def test_a_gateway_whose_replica_key_is_refused_says_so_to_its_callers():
    async def main():
        async with running_fleet(("v1",), replica_api_key="tdm_not_the_right_key") as fleet, fleet.client() as cloud:
            with pytest.raises(CloudUnavailableError) as caught:
                await collect(cloud.generate(chat(0), model=MODEL))
            return str(caught.value), fleet.gateway.membership.replicas[fleet.addresses[0]].state

    message, state = asyncio.run(main())
    assert "UNAUTHENTICATED" in message and "gateway.replica_api_key" in message
    assert state is not ReplicaState.ADMITTED
