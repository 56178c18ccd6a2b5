"""Balancing through a real gateway over four simulator replicas: every policy spreads concurrent load,
prefix affinity sticks to the replica whose cache holds the conversation, yields when that replica is much
busier, and never lets one tenant's prefixes route another's requests."""

from __future__ import annotations

import asyncio

import pytest

from cloud_service.client import CloudClient
from cloud_service.gateway.balancing import Affinity, affinity_keys
from cloud_service.gateway.load import utilization
from cloud_service.wire.v1 import inference_pb2 as pb
from edge_runtime import FinishReason, Message, collect
from tests.cloud_service.gateway.support import (
    GATEWAY_KEY,
    GLOBEX_KEY,
    MODEL,
    chat,
    running_fleet,
    turn,
    wait_until,
)

STREAMS = 32
TOKENS = 60
"""Long enough (240 ms) that no stream ends before all have been routed."""


@pytest.mark.parametrize("policy", ["round_robin", "least_loaded", "p2c"])
def test_every_policy_spreads_concurrent_streams_over_the_fleet(policy):
    async def main():
        async with running_fleet(policy=policy) as fleet, fleet.client() as cloud:
            done = await asyncio.gather(*(collect(cloud.generate(chat(i, tokens=TOKENS), model=MODEL))
                                          for i in range(STREAMS)))
            return done, [fleet.served(a) for a in fleet.addresses]

    done, counts = asyncio.run(main())
    assert all(c.usage.completion_tokens == TOKENS and c.finish_reason is FinishReason.LENGTH for c in done)
    assert sum(counts) == STREAMS
    if policy == "p2c":  # two random choices: nearly even, never piled up
        assert min(counts) >= 4 and max(counts) <= 12, counts
    else:  # blind turns, or exact in-flight counts: even
        assert max(counts) - min(counts) <= 1, counts


def _conversation(turns: int, seed: int, history_words: int = 200) -> list[list[Message]]:
    """The message lists of a conversation's turns (answers stand in as fixed text)."""
    history = [Message("system", f"You are assistant {seed}. " + "Be terse. " * history_words)]
    turns_out = []
    for index in range(turns):
        history = [*history, Message("user", f"conversation {seed} turn {index}: tell me more")]
        turns_out.append(list(history))
        history = [*history, Message("assistant", f"answer {index} " * 20)]
    return turns_out


def test_affinity_sticks_to_the_replica_that_holds_the_conversation():
    async def main():
        async with running_fleet(policy="p2c_affinity") as fleet, fleet.client() as cloud:
            async def converse(seed: int) -> list[int]:
                cached = []
                for messages in _conversation(4, seed):
                    cached.append((await collect(cloud.generate(turn(messages), model=MODEL))).usage.cached_tokens)
                return cached

            cached = await asyncio.gather(*(converse(seed) for seed in range(8)))
            hits = fleet.sample("tandem_gateway_affinity_total", outcome=Affinity.HIT.value)
            used = sum(1 for a in fleet.addresses if fleet.served(a))
            return cached, hits, used

    cached, hits, used = asyncio.run(main())
    # every later turn found its history in the replica's prefix cache (the system prompt alone is ~250 tokens)
    assert all(turns[0] == 0 for turns in cached)
    assert all(c >= 250 for turns in cached for c in turns[1:]), cached
    assert hits >= 8 * 3
    assert used >= 2  # the conversations themselves spread over the fleet


def test_affinity_yields_when_its_replica_is_much_busier_than_the_least_loaded():
    async def main():
        async with running_fleet(policy="p2c_affinity", affinity_imbalance=0.5) as fleet:
            first, second = _conversation(2, seed=1)
            async with fleet.client() as cloud:
                await collect(cloud.generate(turn(first), model=MODEL))
                [home] = [a for a in fleet.addresses if fleet.served(a)]
                replica = fleet.gateway.membership.replicas[home]
                # load the conversation's replica directly (not through the gateway): 3 batches' worth
                async with CloudClient(home, api_key=GATEWAY_KEY) as direct:
                    load = [asyncio.create_task(collect(direct.generate(chat(i, tokens=400), model=MODEL)))
                            for i in range(12)]
                    await wait_until(lambda: utilization(replica) > 1.5, what="the gateway to see the load")
                    answer = await collect(cloud.generate(turn(second), model=MODEL))
                    for task in load:
                        task.cancel()
                    await asyncio.gather(*load, return_exceptions=True)
                return fleet.served(home), answer, fleet.sample("tandem_gateway_affinity_total",
                                                                 outcome=Affinity.YIELD.value)

    served_at_home, answer, yields = asyncio.run(main())
    assert served_at_home == 1  # the second turn went elsewhere...
    assert yields == 1
    assert answer.usage.cached_tokens == 0  # ...where nothing was cached


def test_one_tenants_prefixes_never_route_another_tenants_requests():
    request = pb.GenerateRequest(model=MODEL)
    request.chat.messages.add(role="system", content="A long shared system prompt. " * 10)
    request.chat.messages.add(role="user", content="hi")
    assert set(affinity_keys("acme", MODEL, "v1", request)).isdisjoint(affinity_keys("globex", MODEL, "v1", request))

    async def main():
        async with running_fleet(policy="p2c_affinity") as fleet:
            first, second = _conversation(2, seed=7)
            outcomes = []
            for key in (None, None, GLOBEX_KEY):  # acme's two turns, then globex sends acme's second turn
                before = {o: fleet.sample("tandem_gateway_affinity_total", outcome=o.value) for o in Affinity}
                client = fleet.client() if key is None else fleet.client(key)
                messages = first if not outcomes else second
                async with client as cloud:
                    await collect(cloud.generate(turn(messages), model=MODEL))
                outcomes.append(next(o for o in Affinity
                                     if fleet.sample("tandem_gateway_affinity_total", outcome=o.value) > before[o]))
            return outcomes

    assert asyncio.run(main()) == [Affinity.MISS, Affinity.HIT, Affinity.MISS]
