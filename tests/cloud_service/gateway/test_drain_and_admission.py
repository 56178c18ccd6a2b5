"""Draining behind and at the gateway, and admission control: a replica draining under load loses no request,
the gateway's own drain finishes its streams and turns new ones away, and a saturated fleet queues up to a
bound, then answers RESOURCE_EXHAUSTED with a retry-after."""

from __future__ import annotations

import asyncio

import pytest

from cloud_service.errors import CloudDrainingError, RateLimitedError
from cloud_service.gateway.membership import INFERENCE_SERVICE, ReplicaState
from edge_runtime import collect
from tests.cloud_service.gateway.support import MODEL, chat, running_fleet, wait_until


def test_draining_a_replica_behind_the_gateway_loses_nothing():
    async def main():
        async with running_fleet(("v1", "v1"), policy="round_robin",
                                 simulator={"decode_step_s": 0.01}) as fleet, fleet.client() as cloud:
            leaving = fleet.replicas[0]
            first = [asyncio.create_task(collect(cloud.generate(chat(i, tokens=40), model=MODEL)))
                     for i in range(16)]
            await wait_until(lambda: len(leaving.inference.inflight) == 8, what="half the streams on the replica")
            drained = asyncio.create_task(leaving.drain(timeout_s=30))
            # new requests keep coming while it drains; those sent its way before the gateway knows are refused
            # by the replica as draining and retried elsewhere at once
            second = [asyncio.create_task(collect(cloud.generate(chat(100 + i, tokens=10), model=MODEL)))
                      for i in range(16)]
            answers = await asyncio.gather(*first, *second)
            member = fleet.gateway.membership.replicas[fleet.addresses[0]]
            return answers, await drained, member.state, fleet.served(fleet.addresses[0])

    answers, drained, state, served_by_leaving = asyncio.run(main())
    assert [a.usage.completion_tokens for a in answers] == [40] * 16 + [10] * 16  # nothing lost, nothing cut
    assert drained and state is ReplicaState.DRAINING
    assert served_by_leaving == 8  # only the streams it had when the drain began


def test_the_gateways_own_drain_finishes_streams_and_turns_new_ones_away():
    async def main():
        async with running_fleet(("v1",)) as fleet, fleet.client() as cloud:
            running = asyncio.create_task(collect(cloud.generate(chat(0, tokens=60), model=MODEL)))
            await wait_until(lambda: bool(fleet.gateway.inference.inflight), what="a stream")
            drained = asyncio.create_task(fleet.gateway.drain(timeout_s=30))
            await asyncio.sleep(0.02)
            with pytest.raises(CloudDrainingError, match="draining"):
                await collect(cloud.generate(chat(1), model=MODEL))
            ready, alive = await cloud.health(INFERENCE_SERVICE), await cloud.health("")
            return await running, await drained, ready, alive, (await cloud.get_load()).draining

    completion, drained, ready, alive, draining = asyncio.run(main())
    assert completion.usage.completion_tokens == 60
    assert drained and not ready and alive and draining


def test_a_saturated_fleet_queues_up_to_max_queue_then_refuses_with_retry_after():
    async def main():
        async with running_fleet(("v1",), simulator={"max_running": 2}, replica_queue_limit=0, max_queue=2,
                                 queue_timeout_s=30) as fleet, fleet.client() as cloud:
            gateway = fleet.gateway
            busy = [asyncio.create_task(collect(cloud.generate(chat(i, tokens=40), model=MODEL))) for i in range(2)]
            await wait_until(lambda: len(gateway.inference.inflight) == 2, what="a full replica")
            queued = [asyncio.create_task(collect(cloud.generate(chat(i, tokens=5), model=MODEL)))
                      for i in range(2, 4)]
            await wait_until(lambda: len(gateway.queue) == 2, what="two queued requests")
            depth = fleet.sample("tandem_gateway_queue_depth")
            with pytest.raises(RateLimitedError, match=r"gateway.max_queue=2") as refused:
                await collect(cloud.generate(chat(9), model=MODEL))
            answers = await asyncio.gather(*busy, *queued)
            return depth, refused.value, answers

    depth, refused, answers = asyncio.run(main())
    assert depth == 2
    assert refused.retry_after_s is not None and refused.retry_after_s > 0
    assert [a.usage.completion_tokens for a in answers] == [40, 40, 5, 5]  # the queued ones ran once room opened


def test_a_request_waiting_longer_than_queue_timeout_is_refused():
    async def main():
        async with running_fleet(("v1",), simulator={"max_running": 1}, replica_queue_limit=0,
                                 queue_timeout_s=0.2) as fleet, fleet.client() as cloud:
            busy = asyncio.create_task(collect(cloud.generate(chat(0, tokens=100), model=MODEL)))
            await wait_until(lambda: bool(fleet.gateway.inference.inflight), what="a full replica")
            with pytest.raises(RateLimitedError, match="queue_timeout_s"):
                await collect(cloud.generate(chat(1), model=MODEL))
            busy.cancel()

    asyncio.run(main())
