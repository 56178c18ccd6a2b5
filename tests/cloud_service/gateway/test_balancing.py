"""Balancing through a real gateway over four simulator replicas: every policy spreads concurrent load,
prefix affinity sticks to the replica whose cache holds the conversation, yields when that replica is much
busier, and never lets one tenant's prefixes route another's requests. Without a gateway (the Balancer over
stand-in replicas): random spreads blind to load, and affinity keys cover a conversation's whole prefix."""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from cloud_service.client import CloudClient
from cloud_service.gateway.balancing import AFFINITY_BLOCK_CHARS, Affinity, Balancer, affinity_keys
from cloud_service.gateway.load import utilization
from cloud_service.gateway.work import DecodePace, ReplicaWork, RequestWork
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


@pytest.mark.parametrize("policy", ["round_robin", "random", "least_loaded", "p2c"])
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
    elif policy == "random":  # one random choice: every replica used, spread as luck has it
        assert min(counts) >= 1, counts
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


# -- the Balancer alone ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class StandIn:
    """What the balancer reads of a replica: its address and its load (no report: a batch of 16)."""

    address: str
    work: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(requests=0.0, pace=DecodePace()))
    load: None = None


def _replicas(count: int = 4) -> list[StandIn]:
    return [StandIn(f"10.0.0.{i}:50051") for i in range(count)]


def _wire(messages: list[tuple[str, str]]) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=MODEL)
    for role, content in messages:
        request.chat.messages.add(role=role, content=content)
    return request


def _keys(messages: list[tuple[str, str]]) -> list[bytes]:
    return affinity_keys("acme", MODEL, "v1", _wire(messages))


def test_random_draws_every_replica_about_equally_whatever_their_load():
    replicas = _replicas()
    replicas[0].work.requests = 50.0  # three batches' worth: least-loaded and p2c would avoid it
    balancer = Balancer("random", rng=random.Random(3))
    counts = collections.Counter(balancer.pick(replicas)[0].address for _ in range(4000))
    assert set(counts) == {r.address for r in replicas}
    assert all(900 <= n <= 1100 for n in counts.values()), counts
    assert balancer.pick(replicas)[1] is None  # no affinity outcome


SYSTEM = ("system", "You are a support assistant for Acme. " + "Answer briefly and cite the manual. " * 40)


def _history(name: str, turns: int) -> list[list[tuple[str, str]]]:
    """The prompts of a conversation's turns: the shared system message, then its own questions and answers."""
    history, prompts = [SYSTEM], []
    for index in range(turns):
        history = [*history, ("user", f"{name}: question {index} about my order")]
        prompts.append(list(history))
        history = [*history, ("assistant", f"{name}: answer {index}. " * 30)]
    return prompts


def test_affinity_keys_chain_over_the_whole_conversation():
    first_a, second_a = map(_keys, _history("alice", 2))
    first_b, second_b = map(_keys, _history("bob", 2))
    system = _keys([SYSTEM])
    # the shared system message is one prefix of both (its block keys and its end), nothing after it is
    assert first_a[:len(system)] == first_b[:len(system)] == system
    assert set(first_a[len(system):]).isdisjoint(first_b) and set(second_a[len(system):]).isdisjoint(second_b)
    # the previous turn's whole prompt is a prefix of the next turn's: all its keys come back, then new ones
    assert second_a[:len(first_a)] == first_a and len(second_a) > len(first_a)


def test_affinity_keys_fall_on_block_ends_inside_a_long_message():
    document = "Clause %d: the supplier delivers on time. "
    shared = "".join(document % i for i in range(100))  # ~4,300 characters: 8 whole blocks
    one, other = _keys([("user", shared + "Is clause 7 binding?")]), _keys([("user", shared + "Summarize it.")])
    blocks = len(shared) // AFFINITY_BLOCK_CHARS
    assert one[:blocks] == other[:blocks] and one[blocks:] != other[blocks:]
    framed = len("user\x1f\x1e")  # a message is hashed as role, separator, content, terminator
    assert len(_keys([("user", "x" * (3 * AFFINITY_BLOCK_CHARS - framed))])) == 3  # a block end at a message end: once


def test_conversations_sharing_a_system_prompt_follow_their_own_history():
    replicas = _replicas()
    balancer = Balancer("p2c_affinity", rng=random.Random(0))
    alice, bob = _history("alice", 3), _history("bob", 3)
    # alice's first turn lands on replica 0, bob's (the same system prompt, later) on replica 1: the system
    # prompt's keys now point at replica 1, alice's own history's at replica 0
    assert balancer.pick(replicas[:1], _keys(alice[0])) == (replicas[0], Affinity.MISS)
    # (replica 0, where the system prompt was, is not a candidate: affinity yields)
    assert balancer.pick(replicas[1:2], _keys(bob[0])) == (replicas[1], Affinity.YIELD)
    for index in (1, 2):  # each next turn finds its conversation's replica, among all four
        assert balancer.pick(replicas, _keys(alice[index])) == (replicas[0], Affinity.HIT)
        assert balancer.pick(replicas, _keys(bob[index])) == (replicas[1], Affinity.HIT)
    # a new conversation with the same system prompt goes where that prompt was last served (bob's replica)
    carol = _history("carol", 1)[0]
    assert balancer.pick(replicas, _keys(carol)) == (replicas[1], Affinity.HIT)
    # keyed on the first message only, alice's turns would have followed the system prompt to replica 1
    assert balancer.pick(replicas, _keys([SYSTEM])) == (replicas[1], Affinity.HIT)


def test_a_conversations_next_turn_yields_when_its_replica_is_much_busier():
    replicas = _replicas()
    balancer = Balancer("p2c_affinity", affinity_imbalance=0.5, rng=random.Random(0))
    first, second, third = _history("dave", 3)
    home, _ = balancer.pick(replicas, _keys(first))
    home.work.requests = 16.0  # a full batch more than the others (utilization 1.0 vs 0)
    moved, outcome = balancer.pick(replicas, _keys(second))
    assert outcome is Affinity.YIELD and moved is not home
    home.work.requests = 0.0
    assert balancer.pick(replicas, _keys(third)) == (moved, Affinity.HIT)  # the history moved with it


def _paced(replicas: list[StandIn], seconds_per_token: list[float]) -> None:
    for replica, pace in zip(replicas, seconds_per_token, strict=True):
        replica.work.pace.observe(pace * 10, 10)


@pytest.mark.parametrize("policy", ["least_loaded", "p2c"])
def test_a_replica_going_at_half_speed_counts_its_work_twice(policy):
    fast, slow = _replicas(2)
    _paced([fast, slow], [0.02, 0.04])
    balancer = Balancer(policy, rng=random.Random(1))
    fast.work.requests = slow.work.requests = 2.0
    assert {balancer.pick([fast, slow])[0].address for _ in range(20)} == {fast.address}
    fast.work.requests = 6.0  # (6 + 1) x 1 > (2 + 1) x 2: now the slow one is the shorter wait
    assert {balancer.pick([fast, slow])[0].address for _ in range(20)} == {slow.address}


def test_without_two_paces_the_balancer_goes_by_work_alone():
    fast, slow = _replicas(2)
    _paced([slow], [0.04])
    fast.work.requests, slow.work.requests = 3.0, 2.0
    assert Balancer("least_loaded").pick([fast, slow])[0] is slow


def test_a_replicas_pace_comes_from_the_chunks_after_each_streams_first():
    work = ReplicaWork()
    request = RequestWork(prompt_tokens=40, decode_tokens=100)
    work.add(request)
    work.received(request, 1, now=10.0)  # the first chunk: after the prefill, not a decode sample
    assert work.pace.seconds_per_token is None
    work.received(request, 2, now=10.1)
    work.received(request, 4, now=10.2)
    assert work.pace.seconds_per_token == pytest.approx((0.05 + 0.025) / 2)
