"""The work-aware load estimate: what a forwarded request costs (prompt until its first chunk, tokens still to
come), kept per replica as chunks arrive and streams end; the KV-limited batch learned from reports; and, on a
real fleet, least-loaded routing that counts a long prompt being prefilled as the heavy request it is."""

from __future__ import annotations

import asyncio

import pytest

from cloud_service.gateway.load import LoadSnapshot, batch, kv_batch, utilization, weighted_load
from cloud_service.gateway.work import (
    CHARS_PER_TOKEN,
    MAX_DECODE_TOKENS_COUNTED,
    PREFILL_TOKEN_WEIGHT,
    UNKNOWN_MAX_TOKENS,
    CostScale,
    ReplicaWork,
    RequestWork,
    decode_tokens,
    prompt_tokens,
)
from cloud_service.wire.v1 import inference_pb2 as pb
from edge_runtime import FinishReason, GenerationRequest, SamplingParams, collect
from tests.cloud_service.gateway.support import MODEL, chat, running_fleet, wait_until


def _wire(prompt: str = "", *, max_tokens: int | None = None, messages: tuple[tuple[str, str], ...] = (),
          prefix: str = "") -> pb.GenerateRequest:
    wire = pb.GenerateRequest(model=MODEL, assistant_prefix=prefix)
    if messages:
        wire.chat.messages.extend(pb.ChatMessage(role=r, content=c) for r, c in messages)
    else:
        wire.prompt = prompt
    if max_tokens is not None:
        wire.sampling.max_tokens = max_tokens
    return wire


def test_a_request_is_sized_from_its_characters_and_its_max_tokens():
    assert prompt_tokens(_wire("x" * 400)) == 400 // CHARS_PER_TOKEN
    assert prompt_tokens(_wire(messages=(("system", "s" * 94), ("user", "u" * 96)))) == (6 + 94 + 4 + 96) // 4
    assert prompt_tokens(_wire("x" * 39, prefix="y")) == 10  # the assistant prefix is prefilled too
    assert prompt_tokens(_wire("")) == 1
    assert decode_tokens(_wire("x", max_tokens=30)) == 30
    assert decode_tokens(_wire("x")) == UNKNOWN_MAX_TOKENS
    assert decode_tokens(_wire("x", max_tokens=10 * MAX_DECODE_TOKENS_COUNTED)) == MAX_DECODE_TOKENS_COUNTED


def test_a_replicas_work_follows_its_requests_from_send_to_first_chunk_to_end():
    work = ReplicaWork()
    long, short = RequestWork(prompt_tokens=4000, decode_tokens=100), RequestWork(prompt_tokens=40, decode_tokens=10)
    work.add(long)
    work.add(short)
    assert work.cost == PREFILL_TOKEN_WEIGHT * 4040 + 110
    work.received(long, 1)  # the first chunk: the prompt is done, 99 tokens to come
    assert work.prefill_tokens == 40 and work.decode_tokens == 109
    assert long.cost == 99
    work.received(short, 50)  # more tokens than counted (max_tokens capped): never below zero
    assert short.decode_tokens == 0 and work.decode_tokens == 99
    work.remove(long)
    work.remove(short)
    work.remove(short)  # removing twice changes nothing
    assert work.cost == 0 and work.prefill_tokens == 0 and work.decode_tokens == 0


def test_work_is_read_in_average_requests():
    scale = CostScale()
    work = ReplicaWork(scale)
    requests = [RequestWork(prompt_tokens=400, decode_tokens=100) for _ in range(3)]  # 200 each
    for request in requests:
        work.add(request)
    assert scale.mean == pytest.approx(200) and work.requests == pytest.approx(3)
    heavy = RequestWork(prompt_tokens=4000, decode_tokens=400)  # 1400: seven average requests' worth
    ReplicaWork(scale).add(heavy)
    assert scale.mean > 200  # the mean follows the traffic (shared by every replica of the gateway)


def test_the_kv_limited_batch_is_learned_from_reports_where_the_cache_is_well_used():
    def report(running: int, kv: float) -> pb.LoadReport:
        return pb.LoadReport(running=running, kv_cache_usage=kv, max_running=256)

    assert kv_batch(report(1, 0.9), None) is None  # one sequence is no mix
    assert kv_batch(report(8, 0.1), None) is None  # the cache is far from binding
    first = kv_batch(report(8, 0.5), None)
    assert first == pytest.approx(16)
    snapshot = LoadSnapshot(8, 0, 256, 0.5, 0, 0.0, first)
    assert kv_batch(report(30, 1.0), snapshot) == pytest.approx(16 + 0.2 * (30 - 16))  # smoothed
    assert kv_batch(report(0, 0.0), snapshot) == pytest.approx(16)  # kept while nothing measures it


def test_least_loaded_sees_a_long_prompt_being_prefilled_as_the_heavy_request_it_is():
    """One replica prefills a long prompt (1 request); short requests sent meanwhile all go to the other,
    although by count the long prompt's replica is as loaded after the first of them and less after the
    second."""
    long_prompt = GenerationRequest(prompt="long context " * 4000,  # ~13,000 tokens: 0.5 s of prefill
                                    sampling=SamplingParams(temperature=0.0, max_tokens=100, ignore_eos=True))

    async def main():
        async with running_fleet(("v1", "v1"), policy="least_loaded",
                                 simulator={"prefill_s_per_token": 0.00004}) as fleet, fleet.client() as cloud:
            replicas = fleet.gateway.membership.replicas
            heavy = asyncio.create_task(collect(cloud.generate(long_prompt, model=MODEL)))
            await wait_until(lambda: any(r.inflight for r in replicas.values()), what="the long request to go out")
            [busy] = [r for r in replicas.values() if r.inflight]
            [other] = [r for r in replicas.values() if r is not busy]
            shorts = [asyncio.create_task(collect(cloud.generate(chat(i, tokens=40), model=MODEL))) for i in range(3)]
            await wait_until(lambda: other.inflight == 3, what="the short requests to go out")
            while_busy = (busy.work.prefill_tokens, weighted_load(busy), weighted_load(other),
                          utilization(busy) > utilization(other))
            done = await asyncio.gather(heavy, *shorts)
            await wait_until(lambda: not any(r.inflight for r in replicas.values()), what="the streams to end")
            after = [(r.work.cost, r.work.prefill_tokens, r.work.decode_tokens) for r in replicas.values()]
            return while_busy, fleet.served(busy.address), fleet.served(other.address), done, after

    (prefilling, busy_load, other_load, busier), served_busy, served_other, done, after = asyncio.run(main())
    assert prefilling > 10_000  # the gateway counts the long prompt until its first chunk
    assert busy_load > other_load and busier
    assert (served_busy, served_other) == (1, 3)
    assert all(c.finish_reason is FinishReason.LENGTH for c in done)
    assert after == [(0, 0, 0), (0, 0, 0)]  # every stream's work was taken off when it ended


def test_a_replica_whose_kv_cache_fills_first_counts_its_kv_limited_batch():
    """KV for about four 1000-token sequences, 16 slots: the gateway learns the batch is about four."""
    simulator = {"max_running": 16, "kv_capacity_tokens": 4096, "context_length": 4096, "decode_step_s": 0.01}

    async def main():
        async with running_fleet(("v1",), policy="least_loaded", simulator=simulator) as fleet, \
                fleet.client() as cloud:
            [replica] = fleet.gateway.membership.replicas.values()
            requests = [GenerationRequest(prompt=f"{i} " + "x" * 3900,  # ~976 tokens + 40 to generate
                                          sampling=SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))
                        for i in range(6)]
            streams = [asyncio.create_task(collect(cloud.generate(r, model=MODEL))) for r in requests]
            await wait_until(lambda: replica.load is not None and replica.load.kv_batch is not None,
                             what="a report with the KV cache well used")
            learned, full = replica.load.kv_batch, batch(replica)
            await asyncio.gather(*streams)
            return learned, full

    learned, full = asyncio.run(main())
    assert 3 <= learned <= 5 and full == learned  # not the 16 slots it can never fill with these prompts
