"""SDK fixtures: a signed toy GGUF bundle for the device, the same toy model behind a real replica on
loopback for the cloud, and policies that point at them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cloud_service.auth import hash_key
from cloud_service.config import DistributionConfig, FrontDoorConfig, Limits, ModelConfig, ServerConfig, TenantConfig
from sdk.policy import CascadeSettings, CloudSettings, DeviceSettings, Policy, RetrySettings, RoutingSettings

API_KEY = "tdm_sdk_test_key"
MODEL = "toy"


@pytest.fixture(scope="session")
def device_bundle(bundles) -> Path:
    """The toy Llama as a signed F32 GGUF bundle: greedy output equals the cloud engine's on the same model."""
    return bundles("llama", "gguf", "f32")


@pytest.fixture
def bundle_copy(device_bundle, tmp_path) -> Path:
    """A private copy a test may break or delete."""
    return Path(shutil.copytree(device_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def cloud_engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    engine = CpuEngine(tiny_llama, name=MODEL, version="v1", options=CpuEngineOptions(max_running=8))
    yield engine
    engine.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def replica_config(tiny_llama: Path, port: int = 0, **changes: Any) -> ServerConfig:
    base = ServerConfig(models=(ModelConfig(MODEL, tiny_llama, version="v1"),),
                        front_door=FrontDoorConfig(host="127.0.0.1", port=port,
                                                   tenants=(TenantConfig("app", hash_key(API_KEY)),),
                                                   limits=Limits(max_prompt_tokens=256, max_tokens=256)))
    return dataclasses.replace(base, **changes)


@contextlib.asynccontextmanager
async def replica(tiny_llama: Path, engine: Any, port: int = 0,
                  distribution: DistributionConfig | None = None) -> AsyncIterator[Any]:
    """A real replica on loopback serving ``engine``; yields the server (``server.target`` is its address)."""
    from cloud_service.server import ReplicaServer
    from cloud_service.servicer import ServedModel

    changes = {"distribution": distribution} if distribution is not None else {}
    server = ReplicaServer(replica_config(tiny_llama, port, **changes), models=[ServedModel(MODEL, "v1", engine)])
    bound = await server.start()
    server.target = f"127.0.0.1:{bound}"
    try:
        yield server
    finally:
        await server.stop(0.1, close_engines=False)


def make_policy(*, bundle: Path | None, key: Path | None, target: str | None, mode: str = "auto",
                **sections: Any) -> Policy:
    routing = dict(mode=mode) | sections.pop("routing", {})
    retry = dict(base_delay_s=0.01, max_delay_s=0.05) | sections.pop("retry", {})
    cloud_fields = dict(model=MODEL, api_key=API_KEY, tenant="app", first_token_timeout_s=20,
                        health_interval_s=0.2) | sections.pop("cloud", {})
    cloud = CloudSettings(target=target, **cloud_fields) if target else CloudSettings()
    device = DeviceSettings(bundle=bundle, trusted_keys=(key,) if key else (), **sections.pop("device", {}))
    cascade = CascadeSettings(**sections.pop("cascade", {}))
    return Policy(routing=RoutingSettings(**routing), device=device, cloud=cloud, retry=RetrySettings(**retry),
                  cascade=cascade, **sections)


def run(coroutine_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coroutine_fn())
