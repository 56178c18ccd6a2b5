"""A fleet on loopback for the gateway's tests: ``tandem.fleet.LocalFleet`` with the load simulator engine
and fast settings (real replica servers behind a real gateway, with real keys: callers authenticate at the
gateway, the gateway at the replicas with its own key), plus the configs of single servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from cloud_service.auth import hash_key
from cloud_service.channel import bearer_metadata
from cloud_service.client import CloudClient
from cloud_service.config import FrontDoorConfig, Limits, ModelConfig, ServerConfig, TenantConfig
from cloud_service.convert import request_to_wire
from cloud_service.gateway import GatewayConfig, GatewaySettings
from cloud_service.wire.v1 import inference_pb2_grpc
from edge_runtime import GenerationRequest, Message, SamplingParams
from tandem.fleet import FleetSettings, LocalFleet, simulator_model

MODEL = "sim"
GATEWAY_KEY = "tdm_the_gateways_own_key"
ACME_KEY, GLOBEX_KEY = "tdm_acme_caller", "tdm_globex_caller"
UNLIMITED = {"requests_per_minute": 10**7, "tokens_per_minute": 10**10}
REPLICA_TENANTS = (TenantConfig("gateway", hash_key(GATEWAY_KEY), **UNLIMITED),)
CALLER_TENANTS = (TenantConfig("acme", hash_key(ACME_KEY), **UNLIMITED),
                  TenantConfig("globex", hash_key(GLOBEX_KEY), **UNLIMITED))
REPLICA_LIMITS = Limits(max_prompt_tokens=30_000, max_tokens=4096)
FAST_SIMULATOR = {"max_running": 4, "decode_step_s": 0.004, "decode_s_per_sequence": 0.0,
                  "prefill_s_per_token": 0.00002}
"""A 4-slot replica decoding 250 tokens/s per sequence: short tests, yet real batching and queueing."""
FAST_GATEWAY = {"load_refresh_s": 0.05, "health_interval_s": 0.1, "breaker_cooldown_s": 1.0,
                "replica_api_key": GATEWAY_KEY}


def replica_config(version: str = "v1", *, port: int = 0, **simulator: Any) -> ServerConfig:
    """One simulator replica's config (for tests that start replicas of their own)."""
    return ServerConfig(
        models=(ModelConfig(MODEL, Path("."), engine="simulator", version=version,
                            engine_options=FAST_SIMULATOR | simulator),),
        front_door=FrontDoorConfig(host="127.0.0.1", port=port, tenants=REPLICA_TENANTS, limits=REPLICA_LIMITS),
    )


def gateway_config(addresses: Sequence[str], **settings: Any) -> GatewayConfig:
    """A gateway's config in front of ``addresses`` (for tests that start a gateway of their own)."""
    return GatewayConfig(gateway=GatewaySettings(replicas=tuple(addresses), **(FAST_GATEWAY | settings)),
                         front_door=FrontDoorConfig(host="127.0.0.1", port=0, tenants=CALLER_TENANTS))


class Fleet(LocalFleet):
    """A LocalFleet of simulator replicas with the tests' helpers."""

    def client(self, key: str = ACME_KEY, **options: Any) -> CloudClient:
        return CloudClient(self.target, api_key=key, **options)

    def served(self, address: str, status: str = "OK") -> int:
        """Requests the gateway finished on this replica with this status (its metrics)."""
        assert self.gateway is not None
        total = 0.0
        for metric in self.gateway.metrics.registry.collect():
            for sample in metric.samples:
                labels = sample.labels
                if (sample.name == "tandem_gateway_requests_total" and labels.get("replica") == address
                        and labels.get("status") == status):
                    total += sample.value
        return int(total)

    def sample(self, name: str, **labels: str) -> float:
        assert self.gateway is not None
        value = self.gateway.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@asynccontextmanager
async def running_fleet(replica_versions: Sequence[str] = ("v1",) * 4, *, simulator: dict[str, Any] | None = None,
                        seed: int = 0, **settings: Any) -> AsyncIterator[Fleet]:
    """One simulator replica per version in ``replica_versions`` behind a gateway with ``settings`` (over
    FAST_GATEWAY); callers acme (``ACME_KEY``) and globex (``GLOBEX_KEY``)."""
    options = FAST_SIMULATOR | (simulator or {})
    fleet = Fleet(model=MODEL, api_key=ACME_KEY, tenant="acme", replicas=len(replica_versions), **UNLIMITED,
                  engines=lambda index: simulator_model(model=MODEL, version=replica_versions[index], options=options),
                  settings=FleetSettings(gateway=FAST_GATEWAY | settings, replica_limits=REPLICA_LIMITS,
                                         other_callers=CALLER_TENANTS[1:], replica_key=GATEWAY_KEY, seed=seed))
    async with fleet:
        yield fleet


def chat(index: int, *, tokens: int = 8, words: int = 20, history: Sequence[Message] = ()) -> GenerationRequest:
    text = f"question {index}: " + " ".join(f"word{index}x{w}" for w in range(words))
    return GenerationRequest(messages=[*history, Message("user", text)],
                             sampling=SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True))


def turn(messages: Sequence[Message], *, tokens: int = 4) -> GenerationRequest:
    return GenerationRequest(messages=list(messages),
                             sampling=SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True))


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class RawResult:
    """A Generate call read chunk by chunk: what the client got and how the stream ended."""

    tokens: int
    versions: list[str]
    code: grpc.StatusCode
    trailing: dict[str, str]
    details: str


async def raw_generate(target: str, request: GenerationRequest, *, key: str = ACME_KEY, version: str = "",
                       on_chunk: Callable[[int], Any] | None = None, timeout: float = 30.0) -> RawResult:
    """Call Generate with the raw stub (to see trailing metadata and per-chunk model_version)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = inference_pb2_grpc.InferenceStub(channel).Generate(
            request_to_wire(request, model=MODEL, model_version=version),
            metadata=bearer_metadata(key), timeout=timeout)
        tokens, versions = 0, []
        try:
            async for chunk in call:
                tokens += len(chunk.token_ids)
                if chunk.model_version:
                    versions.append(chunk.model_version)
                if on_chunk is not None:
                    await on_chunk(tokens)
        except grpc.aio.AioRpcError:
            pass
        trailing = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (await call.trailing_metadata()) or ()}
        return RawResult(tokens, versions, await call.code(), trailing, await call.details() or "")


async def start_replica_process(config: Path, timeout_s: float = 30.0
                                ) -> tuple[asyncio.subprocess.Process, int, asyncio.Task[None]]:
    """`tandem cloud serve -c config` in a process of its own; its port (from its "serving" log line, within
    ``timeout_s``), and a task draining its log."""
    import json
    import os
    import sys

    from tests.support import REPO

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tandem", "cloud", "serve", "-c", str(config), cwd=REPO,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stderr is not None
    port = None
    while port is None:
        line = await asyncio.wait_for(process.stderr.readline(), timeout_s)
        assert line, "the replica exited before serving"
        if b'"message": "serving"' in line:
            port = int(json.loads(line)["port"])

    async def drain_log() -> None:
        while await process.stderr.readline():  # type: ignore[union-attr]
            pass

    return process, port, asyncio.get_running_loop().create_task(drain_log())
