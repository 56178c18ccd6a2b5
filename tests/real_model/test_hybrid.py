"""(d) The SDK's hybrid client with the real model on both sides: the q8_0 bundle on the device, a replica
with the CPU engine over the float32 folder in the cloud. Requests go where the signals and the text say,
and a streamed answer whose replica is stopped mid-way is finished on the device from the delivered tokens
(the two sides share one tokenizer.json, so one vocabulary), in English, without a gap or a repeat."""

from __future__ import annotations

import asyncio

import pytest

from sdk import AsyncHybridClient, Reason, Side, SwitchKind
from sdk.signals import Link
from tests.real_model.conftest import CHAT, CONTEXT, STORY
from tests.real_model.support import english, reference_log_probs
from tests.sdk.conftest import make_policy, replica, run
from tests.sdk.test_client_routes import hub

pytestmark = pytest.mark.slow

HARD = [{"role": "user", "content": "Solve the equation 3x + 5 = 20 and explain every step."}]
SHORT = 24
STREAM_TOKENS = 64
CUT_AFTER_CHUNKS = 8
LOW_MEMORY_BYTES = 16 << 20
LINK_WAIT_S = 10.0
PLENTY = dict(available_memory_bytes=8 << 30, battery_percent=None, charging=None)


def _policy(real_bundle, public_key_file, target: str, mode: str = "auto"):
    return make_policy(bundle=real_bundle.path, key=public_key_file, target=target, mode=mode,
                       device=dict(context_length=CONTEXT), cloud=dict(first_token_timeout_s=60))


async def _until(check, timeout: float = LINK_WAIT_S) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def test_requests_go_where_the_signals_and_the_text_say(real_model, real_bundle, public_key_file,
                                                        real_cloud_engine):
    async def main():
        answers = {}
        async with replica(real_model.path, real_cloud_engine) as server, \
                AsyncHybridClient(_policy(real_bundle, public_key_file, server.target)) as client:
            signals = client.signals  # the real hub: its link monitor sees the replica go
            signals.override(**PLENTY)
            ask = lambda messages: client.chat.completions.create(  # noqa: E731
                messages=messages, max_tokens=SHORT, temperature=0)
            answers["easy"] = await ask(CHAT)
            answers["hard"] = await ask(HARD)
            signals.override(battery_percent=7.0, charging=False)
            answers["battery"] = await ask(CHAT)
            signals.override(**PLENTY)
            signals.override(available_memory_bytes=LOW_MEMORY_BYTES)
            answers["memory"] = await ask(CHAT)
            signals.override(**PLENTY)
            await server.stop(0, close_engines=False)
            assert await _until(lambda: signals.current().cloud.state is Link.DOWN)
            answers["offline"] = await ask(HARD)
        return answers

    answers = run(main)
    expected = {"easy": (Side.DEVICE, Reason.DIFFICULTY_LOW), "hard": (Side.CLOUD, Reason.DIFFICULTY_HIGH),
                "battery": (Side.CLOUD, Reason.BATTERY_LOW), "memory": (Side.CLOUD, Reason.DEVICE_MEMORY_SHORT),
                "offline": (Side.DEVICE, Reason.CLOUD_DOWN)}
    for name, (side, reason) in expected.items():
        response = answers[name]
        text = response.choices[0].message.content
        assert response.route.side is side and reason in response.route.reasons, (name, response.route)
        assert not response.route.switches and english(text), (name, text)
    for name in ("easy", "battery", "memory"):
        assert "Paris" in answers[name].choices[0].message.content, name


def test_a_replica_stopped_mid_stream_is_finished_on_the_device(real_model, real_bundle, public_key_file,
                                                                real_cloud_engine, real_reference):
    async def main():
        async with replica(real_model.path, real_cloud_engine) as server:
            policy = _policy(real_bundle, public_key_file, server.target, mode="prefer_cloud")
            async with AsyncHybridClient(policy, signals=hub()) as client:
                whole = await client.chat.completions.create(messages=STORY, max_tokens=STREAM_TOKENS,
                                                             temperature=0, mode="cloud_only")
                stream = await client.chat.completions.create(messages=STORY, max_tokens=STREAM_TOKENS,
                                                              temperature=0, stream=True)
                pieces = []
                async with stream:
                    async for chunk in stream:
                        pieces.append(chunk.choices[0].delta.content or "")
                        if len(pieces) == CUT_AFTER_CHUNKS:
                            await server.stop(0, close_engines=False)  # the replica dies under the stream
        return whole.choices[0].message.content, "".join(pieces), stream.route

    uninterrupted, text, route = run(main)
    assert route.sides == (Side.CLOUD, Side.DEVICE) and route.side is Side.DEVICE
    [switch] = route.switches
    assert (switch.kind, switch.from_side, switch.to_side, switch.reason) == (
        SwitchKind.FAILOVER, Side.CLOUD, Side.DEVICE, Reason.STREAM_BROKEN)
    assert 0 < switch.after_tokens < STREAM_TOKENS and route.tokens == STREAM_TOKENS
    delivered, continued = text[: switch.after_chars], text[switch.after_chars:]
    assert delivered and uninterrupted.startswith(delivered)  # what the cloud sent is its own answer's start
    assert english(continued) and not continued.lstrip().startswith(delivered.strip()), (delivered, continued)

    # The device's continuation reads as the reference model's own text: under the float32 reference its
    # tokens are about as likely as the cloud's uninterrupted answer's.
    tokenizer, model = real_reference
    prompt = tokenizer.apply_chat_template(STORY, add_generation_prompt=True)

    def mean_logprob(answer: str) -> float:
        ids = tokenizer.encode(answer, add_special_tokens=False)
        log_probs = reference_log_probs(model, [*prompt, *ids])[len(prompt) - 1: -1]
        return float(log_probs[range(len(ids)), ids].mean())

    assert mean_logprob(text) > mean_logprob(uninterrupted) - 0.5, (text, uninterrupted)
