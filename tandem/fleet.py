"""A whole cloud tier on loopback, in this process: CPU-engine replicas of one model behind the gateway.

For demos, evaluations and tests that need "the cloud" without a cluster:

    async with LocalFleet(teacher_dir, model="teacher", api_key="sk-demo", replicas=2,
                          distribution=DistributionConfig({"student": (bundle,)}, (public_key,))) as fleet:
        fleet.target                         # "127.0.0.1:PORT": the gateway (Inference, health, ModelDistribution)
        fleet.streaming_replicas()           # [1]: the replicas with a Generate stream in flight right now
        await fleet.kill_replica(0)          # the replica dies at once: its streams are cut mid-way
        await fleet.restart_replica(0)       # back on the same port; the gateway re-admits it on its next check
        await fleet.stop_gateway()           # the whole cloud is unreachable ...
        await fleet.start_gateway()          # ... and back, on the same port

The replicas and the gateway are the real servers (``ReplicaServer``, ``GatewayServer``) on loopback ports,
configured as their TOML files would configure them: callers authenticate at the gateway with ``api_key``
(tenant ``tenant``, with ``requests_per_minute`` / ``tokens_per_minute`` quotas), the gateway at the replicas
with a key of its own. Each replica runs its own ``CpuEngine`` (continuous batching); the engines stay loaded
across kills and restarts, so a restart takes milliseconds.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from cloud_service.auth import hash_key
from cloud_service.config import DistributionConfig, ModelConfig, ServerConfig, TenantConfig

if TYPE_CHECKING:
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions
    from cloud_service.gateway.config import GatewayConfig
    from cloud_service.gateway.server import GatewayServer
    from cloud_service.server import ReplicaServer
    from evaluation.routing.run import CloudSpec

HOST = "127.0.0.1"
GATEWAY_TENANT = "gateway"
HEALTH_INTERVAL_S = 0.25
"""The gateway's health checks: short, so a killed or restarted replica is noticed within a second."""
LOAD_REFRESH_S = 0.1
BREAKER_COOLDOWN_S = 1.0
STOP_GRACE_S = 0.5
GATEWAY_REQUESTS_PER_MINUTE = 10_000_000
GATEWAY_TOKENS_PER_MINUTE = 1_000_000_000
"""The gateway's own quotas at the replicas: unmetered in practice (the gateway meters its callers)."""


class LocalFleet:
    """``replicas`` CPU replicas of the model at ``model_dir`` behind one gateway, all on loopback."""

    def __init__(self, model_dir: str | Path, *, model: str, api_key: str, version: str = "v1", replicas: int = 2,
                 tenant: str = "local", distribution: DistributionConfig | None = None,
                 engine_options: CpuEngineOptions | None = None, requests_per_minute: int | None = None,
                 tokens_per_minute: int | None = None) -> None:
        if replicas < 1:
            raise ValueError(f"a fleet needs at least one replica, got replicas={replicas}")
        self.model_dir = Path(model_dir)
        self.model, self.version, self.tenant = model, version, tenant
        self.api_key = api_key
        self.distribution = distribution or DistributionConfig()
        self.engine_options = engine_options
        self.replica_count = replicas
        quotas = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
        self._quotas = {name: value for name, value in quotas.items() if value is not None}
        """The caller tenant's quotas at the gateway (TenantConfig's defaults where not given)."""
        self._replica_key = secrets.token_urlsafe(24)
        self.engines: list[CpuEngine] = []
        self.replicas: list[ReplicaServer | None] = []
        self.replica_ports: list[int] = []
        self.gateway: GatewayServer | None = None
        self.gateway_port = 0

    @property
    def target(self) -> str:
        """The gateway's address, for ``CloudSettings(target=...)`` or ``cloud_service.client``."""
        if not self.gateway_port:
            raise RuntimeError("the fleet is not started: use `async with LocalFleet(...)` or await start()")
        return f"{HOST}:{self.gateway_port}"

    # -- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> str:
        """Load the engines, start the replicas, then the gateway; returns the gateway's address."""
        import asyncio

        from cloud_service.engines.cpu import CpuEngine

        try:
            while len(self.engines) < self.replica_count:
                self.engines.append(await asyncio.to_thread(
                    CpuEngine, self.model_dir, name=self.model, version=self.version, options=self.engine_options))
            self.replicas = [None] * self.replica_count
            self.replica_ports = [0] * self.replica_count
            for index in range(self.replica_count):
                await self.restart_replica(index)
            await self.start_gateway()
        except BaseException:
            await self.close()
            raise
        return self.target

    async def close(self) -> None:
        """Stop the gateway and every replica, and free the engines. Safe to call twice."""
        import asyncio

        await self.stop_gateway()
        for index in range(len(self.replicas)):
            await self.kill_replica(index)
        engines, self.engines = self.engines, []
        for engine in engines:
            await asyncio.to_thread(engine.close)

    async def __aenter__(self) -> LocalFleet:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    # -- replicas ------------------------------------------------------------------------------------------

    def _replica_config(self, index: int) -> ServerConfig:
        return ServerConfig(
            models=(ModelConfig(self.model, self.model_dir, version=self.version),),
            host=HOST, port=self.replica_ports[index], drain_timeout_s=STOP_GRACE_S,
            tenants=(TenantConfig(GATEWAY_TENANT, hash_key(self._replica_key),
                                  requests_per_minute=GATEWAY_REQUESTS_PER_MINUTE,
                                  tokens_per_minute=GATEWAY_TOKENS_PER_MINUTE),),
        )

    async def kill_replica(self, index: int) -> None:
        """Stop replica ``index`` at once (its streams end mid-way, as when a pod dies); the engine stays loaded."""
        server, self.replicas[index] = self.replicas[index], None
        if server is not None:
            await server.stop(0, close_engines=False)

    async def restart_replica(self, index: int) -> None:
        """Start replica ``index`` (again), on the port it had."""
        from cloud_service.server import ReplicaServer
        from cloud_service.servicer import ServedModel

        if self.replicas[index] is not None:
            return
        server = ReplicaServer(self._replica_config(index),
                               models=[ServedModel(self.model, self.version, self.engines[index])])
        self.replica_ports[index] = await server.start()
        self.replicas[index] = server

    @property
    def live_replicas(self) -> int:
        return sum(server is not None for server in self.replicas)

    def streaming_replicas(self) -> list[int]:
        """Indices of the live replicas with a Generate stream in flight (e.g. to kill the one serving a request)."""
        return [index for index, server in enumerate(self.replicas) if server is not None and server.inference.inflight]

    # -- gateway -------------------------------------------------------------------------------------------

    def _gateway_config(self) -> GatewayConfig:
        from cloud_service.gateway.config import GatewayConfig, GatewaySettings

        settings = GatewaySettings(
            replicas=tuple(f"{HOST}:{port}" for port in self.replica_ports), health_interval_s=HEALTH_INTERVAL_S,
            load_refresh_s=LOAD_REFRESH_S, breaker_cooldown_s=BREAKER_COOLDOWN_S, replica_api_key=self._replica_key,
        )
        return GatewayConfig(gateway=settings, host=HOST, port=self.gateway_port, drain_timeout_s=STOP_GRACE_S,
                             tenants=(TenantConfig(self.tenant, hash_key(self.api_key), **self._quotas),),
                             distribution=self.distribution)

    async def start_gateway(self) -> str:
        """Start the gateway (again, on the same port); returns its address."""
        from cloud_service.gateway.server import GatewayServer

        if self.gateway is None:
            gateway = GatewayServer(self._gateway_config())
            self.gateway_port = await gateway.start()
            self.gateway = gateway
        return self.target

    async def stop_gateway(self) -> None:
        """Stop the gateway at once: the cloud becomes unreachable (its replicas keep running)."""
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            await gateway.stop(0)


@asynccontextmanager
async def start_cloud(spec: CloudSpec) -> AsyncIterator[str]:
    """``tandem eval``'s cloud tier (``evaluation.routing.run.StartCloud``): a LocalFleet of CPU replicas of
    ``spec.teacher``; yields the gateway's address."""
    from cloud_service.engines.cpu import CpuEngineOptions

    options = CpuEngineOptions(threads=spec.threads, max_running=spec.max_running)
    async with LocalFleet(spec.teacher, model=spec.model, api_key=spec.api_key, replicas=spec.replicas,
                          tenant=spec.tenant, engine_options=options, requests_per_minute=spec.requests_per_minute,
                          tokens_per_minute=spec.tokens_per_minute) as fleet:
        yield fleet.target


__all__ = ["LocalFleet", "start_cloud"]
