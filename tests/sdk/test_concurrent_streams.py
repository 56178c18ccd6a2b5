"""Concurrent streams on one client, served by two versions with different vocabularies, then failed over.

One gateway (round robin) in front of two real replicas of model "toy": v1 is the toy Llama (the device
bundle's model and vocabulary), v2 the toy Qwen2 (another vocabulary). Eight streams run at once on one
AsyncHybridClient; when every stream has its first tokens the gateway stops, and each stream continues on the
device. Every stream's route must name the version that really served it, and its continuation must follow
that version's answer: from token ids for v1 (the answer equals v1's uninterrupted one), from text for v2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cloud_service.auth import hash_key
from edge_runtime.types import GenerationRequest, Message, PrefixTokens, SamplingParams
from sdk import AsyncHybridClient
from tests.sdk.conftest import API_KEY, MODEL, make_policy

STREAMS = 8
MAX_TOKENS = 160
CUT_AFTER = 3
"""Chunks each stream reads before the gateway stops."""
GATEWAY_KEY = "tdm_concurrent_gateway_key"


def _prompt(index: int) -> str:
    return f"Tell me about river number {index} and the town on its bank."


async def _solo(engine: Any, index: int) -> list[Any]:
    request = GenerationRequest(messages=(Message("user", _prompt(index)),),
                                sampling=SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    return [event async for event in engine.generate(request)]


def _replica_toml(folder: Path, model_dir: Path, version: str) -> Path:
    path = folder / f"replica-{version}.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\nmetrics_port = 0\n'
        f"[limits]\nmax_tokens = 256\n"
        f'[[models]]\nname = "{MODEL}"\npath = "{model_dir}"\nversion = "{version}"\n'
        f'[[tenants]]\nname = "gateway"\nkey_sha256 = "{hash_key(GATEWAY_KEY)}"\n'
        f"requests_per_minute = 100000\ntokens_per_minute = 100000000\n")
    return path


def _gateway_toml(folder: Path, targets: list[str]) -> Path:
    path = folder / "gateway.toml"
    replicas = ", ".join(f'"{target}"' for target in targets)
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\nmetrics_port = 0\n'
        f'[gateway]\nreplicas = [{replicas}]\npolicy = "round_robin"\nreplica_api_key = "{GATEWAY_KEY}"\n'
        f"health_interval_s = 0.2\nload_refresh_s = 0.1\n"
        f'[[tenants]]\nname = "app"\nkey_sha256 = "{hash_key(API_KEY)}"\n'
        f"requests_per_minute = 100000\ntokens_per_minute = 100000000\n")
    return path


async def _device_continues(client: AsyncHybridClient, index: int, delivered: list[Any], version: str) -> str:
    """What the device answers after ``delivered`` (the cloud's first tokens): from their ids when v1 served
    them (the device's vocabulary), from their text when v2 did. Trailing tokens without text are generated
    again (the SDK never continues after text the caller has not seen)."""
    engine = await client.edge.engine()
    released = len(delivered)
    while released and not delivered[released - 1].text:
        released -= 1
    prefix = "".join(e.text for e in delivered[:released])
    ids = tuple(e.token_id for e in delivered[:released])
    tokens = PrefixTokens(engine.info.vocabulary, ids, prefix) if version == "v1" and ids else None
    request = GenerationRequest(messages=(Message("user", _prompt(index)),), assistant_prefix=prefix,
                                prefix_tokens=tokens,
                                sampling=SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS - released))
    return "".join([event.text async for event in engine.generate(request)])


async def _scenario(tmp_path: Path, models: dict[str, Path], device_bundle: Path, key: Path) -> None:
    from cloud_service.config import load_config
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions
    from cloud_service.gateway.config import load_gateway_config
    from cloud_service.gateway.server import GatewayServer
    from cloud_service.server import ReplicaServer
    from cloud_service.servicer import ServedModel

    engines = {version: CpuEngine(folder, name=MODEL, version=version, options=CpuEngineOptions(max_running=8))
               for version, folder in models.items()}
    solo = {version: [await _solo(engine, index) for index in range(STREAMS)] for version, engine in engines.items()}
    assert all(solo["v1"][i][0].text != solo["v2"][i][0].text or solo["v1"][i][1].text != solo["v2"][i][1].text
               for i in range(STREAMS)), "the two versions must answer differently for the routes to be checked"
    replicas: list[str] = []
    servers: list[Any] = []
    try:
        for version, folder in models.items():
            server = ReplicaServer(load_config(_replica_toml(tmp_path, folder, version)),
                                   models=[ServedModel(MODEL, version, engines[version])])
            servers.append(server)
            replicas.append(f"127.0.0.1:{await server.start()}")
        gateway = GatewayServer(load_gateway_config(_gateway_toml(tmp_path, replicas)))
        target = f"127.0.0.1:{await gateway.start()}"
        policy = make_policy(bundle=device_bundle, key=key, target=target, mode="prefer_cloud")
        async with AsyncHybridClient(policy) as client:
            assert await client.preload()
            arrived = asyncio.Barrier(STREAMS + 1)
            resume = asyncio.Event()

            async def consume(index: int) -> tuple[str, Any]:
                stream = await client.chat.completions.create(
                    messages=[{"role": "user", "content": _prompt(index)}], max_tokens=MAX_TOKENS, temperature=0,
                    stream=True)
                pieces: list[str] = []
                async with stream:
                    async for chunk in stream:
                        pieces.append(chunk.choices[0].delta.content or "")
                        if len(pieces) == CUT_AFTER:
                            await arrived.wait()
                            await resume.wait()
                return "".join(pieces), stream.route

            tasks = [asyncio.create_task(consume(index)) for index in range(STREAMS)]
            await asyncio.wait_for(arrived.wait(), 60)
            await gateway.stop(0)  # every stream breaks mid-way; the device continues each
            resume.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks), 120)

            served = set()
            for index, (text, route) in enumerate(results):
                cloud = route.attempts[0]
                assert str(cloud.side) == "cloud" and cloud.version in solo, route
                served.add(cloud.version)
                events = solo[cloud.version][index]
                if len(route.attempts) == 1:  # it finished before the gateway stopped
                    assert text == "".join(e.text for e in events)
                    continue
                assert [str(a.side) for a in route.attempts] == ["cloud", "device"], route
                assert any(s.reason == "stream_broken" for s in route.switches), route
                got = cloud.tokens
                prefix = "".join(e.text for e in events[:got])
                assert text == prefix + await _device_continues(client, index, events[:got], cloud.version), \
                    (index, route)
            assert served == {"v1", "v2"}
    finally:
        for server in servers:
            await server.stop(0, close_engines=False)
        for engine in engines.values():
            engine.close()


@pytest.mark.timeout(300)
def test_concurrent_streams_keep_their_own_version_vocabulary_and_continuation(
        tmp_path, tiny_llama, tiny_qwen2, device_bundle, public_key_file) -> None:
    asyncio.run(_scenario(tmp_path, {"v1": tiny_llama, "v2": tiny_qwen2}, device_bundle, public_key_file))
