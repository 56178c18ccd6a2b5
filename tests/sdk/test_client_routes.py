"""The hybrid client with a real signed bundle on the device and a real replica on loopback: where requests
go in each mode and under each signal, what the route says, streaming, and checks before any work."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sdk import AsyncHybridClient, HybridClient, NoRouteError, Reason, RequestError, Side
from sdk.signals import SignalHub, StaticSignals
from tests.sdk.conftest import make_policy, replica, run
from tests.support import ConnectionCounter

QUESTION = [{"role": "user", "content": "Tell me about the river"}]
HARD = [{"role": "user", "content": "Solve 123456789 * 987654321 and prove it, step by step:\n```python\ndef f():"}]
GIB = 1 << 30


def hub(**readings) -> SignalHub:
    base = dict(available_memory_bytes=8 * GIB, battery_percent=None, charging=None)
    return SignalHub.from_static(StaticSignals(**(base | readings)))


def test_auto_easy_on_device_hard_in_cloud_with_reasons(tiny_llama, cloud_engine, device_bundle, public_key_file):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target)
            async with AsyncHybridClient(policy, signals=hub()) as client:
                easy = await client.chat.completions.create(messages=QUESTION, max_tokens=8, temperature=0)
                hard = await client.chat.completions.create(messages=HARD, max_tokens=8, temperature=0)
                return easy, hard

    easy, hard = run(main)
    assert easy.route.side is Side.DEVICE and easy.route.reasons == (Reason.DIFFICULTY_LOW,)
    assert hard.route.side is Side.CLOUD and hard.route.reasons == (Reason.DIFFICULTY_HIGH,)
    assert hard.route.version == "v1" and hard.route.model == "toy"
    for response in (easy, hard):
        assert response.usage.completion_tokens == len(response.choices[0].logprobs) > 0
        assert response.route.timings.ttft_s is not None and response.route.timings.total_s > 0
        assert not response.route.switches


@pytest.mark.parametrize(
    ("readings", "reason"),
    [
        (dict(battery_percent=9.0, charging=False), Reason.BATTERY_LOW),
        (dict(thermal="critical"), Reason.THERMAL_HIGH),
        (dict(available_memory_bytes=1 << 20), Reason.DEVICE_MEMORY_SHORT),
    ],
)
def test_device_signals_move_an_easy_request_to_the_cloud(tiny_llama, cloud_engine, device_bundle,
                                                          public_key_file, readings, reason):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target)
            async with AsyncHybridClient(policy, signals=hub(**readings)) as client:
                return await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)

    response = run(main)
    assert response.route.side is Side.CLOUD
    assert response.route.reasons == (reason,)


def test_charging_and_a_metered_network_keep_work_on_the_device(tiny_llama, cloud_engine, device_bundle,
                                                                public_key_file):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target)
            signals = hub(battery_percent=5.0, charging=True)
            async with AsyncHybridClient(policy, signals=signals) as client:
                charging = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
                signals.override(metered=True)
                metered = await client.chat.completions.create(messages=HARD, max_tokens=4, temperature=0)
                return charging, metered

    charging, metered = run(main)
    assert charging.route.side is Side.DEVICE
    assert metered.route.side is Side.DEVICE
    assert metered.route.reasons == (Reason.DIFFICULTY_HIGH, Reason.METERED_NETWORK)


def test_local_only_never_opens_a_connection(device_bundle, public_key_file):
    counter = ConnectionCounter()
    try:
        policy = make_policy(bundle=device_bundle, key=public_key_file, target=counter.target, mode="local_only")
        with HybridClient(policy) as client:  # default signal providers, psutil
            answers = [client.chat.completions.create(messages=HARD, max_tokens=4, temperature=0) for _ in range(2)]
            with client.chat.completions.create(messages=QUESTION, max_tokens=4, stream=True) as stream:
                text = "".join(chunk.choices[0].delta.content for chunk in stream)
            threading.Event().wait(0.5)  # longer than the policy's health interval
    finally:
        counter.close()
    assert counter.accepted == 0
    assert all(a.route.side is Side.DEVICE and a.route.reasons == (Reason.MODE_LOCAL_ONLY,) for a in answers)
    assert text and stream.route.side is Side.DEVICE


def test_cloud_only_never_loads_the_local_model(tiny_llama, cloud_engine, bundle_copy, public_key_file):
    (bundle_copy / "manifest.sig").write_bytes(b"not a signature")  # loading it would fail loudly

    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=bundle_copy, key=public_key_file, target=server.target, mode="cloud_only")
            async with AsyncHybridClient(policy, signals=hub()) as client:
                response = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
                return response, client.edge

    response, edge = run(main)
    assert edge is None
    assert response.route.side is Side.CLOUD and response.route.reasons == (Reason.MODE_CLOUD_ONLY,)


def test_prefer_modes_and_per_request_override(tiny_llama, cloud_engine, device_bundle, public_key_file):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target,
                                 mode="prefer_cloud")
            async with AsyncHybridClient(policy, signals=hub()) as client:
                cloud = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
                local = await client.chat.completions.create(messages=HARD, max_tokens=4, temperature=0,
                                                             mode="prefer_local")
                return cloud, local

    cloud, local = run(main)
    assert (cloud.route.side, cloud.route.reasons) == (Side.CLOUD, (Reason.MODE_PREFER_CLOUD,))
    assert (local.route.side, local.route.reasons) == (Side.DEVICE, (Reason.MODE_PREFER_LOCAL,))


def test_streaming_equals_non_streaming_and_closing_early_frees_the_device(device_bundle, public_key_file):
    policy = make_policy(bundle=device_bundle, key=public_key_file, target=None, mode="local_only")
    with HybridClient(policy, signals=hub()) as client:
        whole = client.chat.completions.create(messages=QUESTION, max_tokens=12, temperature=0)
        with client.chat.completions.create(messages=QUESTION, max_tokens=12, temperature=0, stream=True) as stream:
            chunks = list(stream)
        with client.chat.completions.create(messages=QUESTION, max_tokens=200, temperature=0, stream=True) as early:
            next(iter(early))  # leave after one chunk: the request is cancelled
        again = client.chat.completions.create(messages=QUESTION, max_tokens=12, temperature=0)
    assert "".join(c.choices[0].delta.content for c in chunks) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage == whole.usage and chunks[-1].route is not None
    assert again.choices[0].message.content == whole.choices[0].message.content


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(messages=[]), r"^chat\.messages is empty"),
        (dict(messages=[{"role": "wizard", "content": "hi"}]), r"^chat\.messages\[0\]\.role 'wizard'"),
        (dict(messages=[{"content": "hi"}]), r"^chat\.messages\[0\] must be a mapping"),
        (dict(messages="hello"), r"^chat\.messages must be a list"),
        (dict(messages=QUESTION, max_tokens=10**9), r"^sampling\.max_tokens must be an integer from 1"),
        (dict(messages=QUESTION, temperature=-1), r"^sampling\.temperature must be"),
        (dict(messages=QUESTION, stop=["ok", ""]), r"^sampling\.stop\[1\] must be a non-empty string"),
        (dict(messages=[*QUESTION, {"role": "assistant", "content": "It"}]),
         r"^chat\.messages\[1\] is the assistant's; to continue an answer pass assistant_prefix="),
        (dict(messages=QUESTION, mode="sometimes"), "mode 'sometimes'"),
    ],
)
def test_bad_requests_fail_before_any_work(device_bundle, public_key_file, kwargs, message):
    policy = make_policy(bundle=device_bundle, key=public_key_file, target=None, mode="local_only")
    with HybridClient(policy, signals=hub()) as client:
        with pytest.raises(RequestError, match=message):
            client.chat.completions.create(**kwargs)
        assert not client.aio.edge.loaded


def test_both_sides_impossible_is_one_error_with_each_reason(tmp_path, public_key_file):
    policy = make_policy(bundle=tmp_path / "not-yet", key=public_key_file, target="127.0.0.1:9",
                         cloud=dict(first_token_timeout_s=2))

    async def main():
        async with AsyncHybridClient(policy, signals=hub()) as client:
            with pytest.raises(NoRouteError) as caught:
                await client.chat.completions.create(messages=QUESTION, max_tokens=4)
            return caught.value

    error = run(main)
    assert set(error.reasons) == {"device", "cloud"}
    assert error.reasons["device"] == Reason.NO_BUNDLE
    assert "UNAVAILABLE" in error.reasons["cloud"] or "connect" in error.reasons["cloud"].lower()
    assert set(error.codes) == {"cloud"} and error.codes["cloud"]  # the device was never tried: no bundle
    asyncio.set_event_loop(None)
