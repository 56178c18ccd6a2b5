"""Fallback, mid-stream failover, the circuit breaker and the confidence cascade, with real engines: the
toy model in a signed GGUF bundle on the device and the same model behind a replica on loopback, so a greedy
answer continued on the other side (from the delivered token ids: the vocabularies match) must equal a single
engine's greedy answer exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sdk import AsyncHybridClient, Reason, Side, SwitchKind
from sdk.breaker import BreakerState
from tests.sdk.conftest import free_port, make_policy, replica, run
from tests.sdk.test_client_routes import QUESTION, hub

TOKENS = 160


async def _single_engine(target, device_bundle, public_key_file) -> str:
    """A greedy answer from one side only (the device when target is None)."""
    policy = make_policy(bundle=device_bundle, key=public_key_file, target=target,
                         mode="cloud_only" if target else "local_only")
    async with AsyncHybridClient(policy, signals=hub()) as client:
        response = await client.chat.completions.create(messages=QUESTION, max_tokens=TOKENS, temperature=0)
    assert response.usage.completion_tokens == TOKENS, "the toy model must not stop early for this test"
    return response.choices[0].message.content


def _assert_exact(text: str, route, first: str) -> None:
    """The hybrid answer is exactly the single engine's uninterrupted greedy answer: nothing repeated, nothing
    lost, and the continuing side went on from the delivered token ids (same vocabulary on both sides)."""
    [switch] = route.switches
    assert 0 < switch.after_tokens < TOKENS and 0 < switch.after_chars <= len(text)
    assert text == first


async def stream_with(client: AsyncHybridClient, on_chunk: Callable[[int], Any] | None = None,
                      max_tokens: int = TOKENS, **kwargs: Any) -> tuple[str, Any]:
    """Stream QUESTION greedily; ``on_chunk(chunks so far)`` is awaited after each chunk."""
    stream = await client.chat.completions.create(messages=QUESTION, max_tokens=max_tokens, temperature=0,
                                                  stream=True, **kwargs)
    pieces = []
    async with stream:
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content)
            if on_chunk is not None:
                await on_chunk(len(pieces))
    return "".join(pieces), stream.route


def close_device_at(client: AsyncHybridClient, at: int = 3) -> Callable[[int], Awaitable[None]]:
    """An ``on_chunk`` that closes the device's engine after ``at`` chunks: the local runtime goes away
    mid-answer."""
    async def on_chunk(count: int) -> None:
        if count == at:
            engine = await client.edge.engine()
            await asyncio.to_thread(engine.close)

    return on_chunk


def test_cloud_killed_mid_stream_continues_on_the_device_without_a_gap(tiny_llama, cloud_engine, device_bundle,
                                                                       public_key_file):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            first = await _single_engine(server.target, device_bundle, public_key_file)
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target,
                                 mode="prefer_cloud")
            async with AsyncHybridClient(policy, signals=hub()) as client:

                async def kill(count):
                    if count == 3:
                        await server.stop(0, close_engines=False)  # the replica dies under the stream

                text, route = await stream_with(client, kill)
        return text, route, first

    text, route, first = run(main)
    _assert_exact(text, route, first)
    assert route.sides == (Side.CLOUD, Side.DEVICE)
    [switch] = route.switches
    assert (switch.kind, switch.from_side, switch.to_side, switch.reason) == (
        SwitchKind.FAILOVER, Side.CLOUD, Side.DEVICE, Reason.STREAM_BROKEN)
    assert route.side is Side.DEVICE


def test_device_failing_mid_stream_continues_in_the_cloud(tiny_llama, cloud_engine, device_bundle, public_key_file):
    async def main():
        first = await _single_engine(None, device_bundle, public_key_file)
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target,
                                 mode="prefer_local")
            async with AsyncHybridClient(policy, signals=hub()) as client:

                text, route = await stream_with(client, close_device_at(client))
        return text, route, first

    text, route, first = run(main)
    _assert_exact(text, route, first)
    assert route.sides == (Side.DEVICE, Side.CLOUD)
    assert [(s.kind, s.reason, s.code) for s in route.switches] == [
        (SwitchKind.FAILOVER, Reason.STREAM_BROKEN, "EngineClosedError")]


def test_dead_cloud_falls_back_then_the_breaker_opens_and_closes_again(tiny_llama, cloud_engine, device_bundle,
                                                                        public_key_file):
    port = free_port()
    policy = make_policy(bundle=device_bundle, key=public_key_file, target=f"127.0.0.1:{port}",
                         mode="prefer_cloud", retry=dict(breaker_failures=2, breaker_reset_s=1.5))

    async def main():
        async with AsyncHybridClient(policy, signals=hub()) as client:
            ask = lambda: client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)  # noqa: E731
            first, second = await ask(), await ask()
            breaker = client.orchestrator.breakers[Side.CLOUD]
            opened = breaker.state
            third = await ask()
            async with replica(tiny_llama, cloud_engine, port=port):
                await asyncio.sleep(1.6)  # past the reset time and gRPC's reconnect backoff (1 s)
                half_open = breaker.state
                fourth = await ask()
                closed = breaker.state
        return first, second, third, fourth, (opened, half_open, closed)

    first, second, third, fourth, states = run(main)
    for response in (first, second):
        assert response.route.side is Side.DEVICE
        [switch] = response.route.switches
        assert (switch.kind, switch.reason, switch.code) == (SwitchKind.FALLBACK, Reason.CLOUD_FAILED, "UNAVAILABLE")
    assert third.route.reasons == (Reason.CLOUD_BREAKER_OPEN,) and not third.route.switches
    assert states == (BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED)
    assert fourth.route.side is Side.CLOUD and not fourth.route.switches


def test_cascade_escalates_unsure_device_answers_before_the_caller_sees_them(tiny_llama, cloud_engine,
                                                                             device_bundle, public_key_file):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            results = {}
            for name, threshold in (("unsure", -1e-6), ("sure", -1000.0)):
                policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target,
                                     mode="prefer_local", cascade=dict(enabled=True, min_logprob=threshold,
                                                                       window_tokens=4))
                async with AsyncHybridClient(policy, signals=hub()) as client:
                    seen = []

                    async def note(count, seen=seen):
                        seen.append(count)

                    results[name] = await stream_with(client, note)
                    results[name + "-cloud"] = (await client.chat.completions.create(
                        messages=QUESTION, max_tokens=TOKENS, temperature=0, mode="cloud_only")).choices[0]
            return results

    results = run(main)
    text, route = results["unsure"]
    assert text == results["unsure-cloud"].message.content  # nothing of the device's answer leaked
    assert [(s.kind, s.from_side, s.to_side, s.reason) for s in route.switches] == [
        (SwitchKind.ESCALATION, Side.DEVICE, Side.CLOUD, Reason.LOW_CONFIDENCE)]
    assert route.attempts[0].side is Side.DEVICE and route.attempts[0].tokens == 0
    text, route = results["sure"]
    assert route.side is Side.DEVICE and not route.switches and len(text) > 0
