"""A whole cloud tier on loopback, in this process: replicas behind the gateway.

For demos, evaluations, tests and benchmarks that need "the cloud" without a cluster:

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
with a key of its own.

What each replica serves comes from ``engines``, a ``ModelFactory``: replica index -> its ``ServedModel``,
called once per replica when the fleet starts. The default runs a ``CpuEngine`` (continuous batching) over
``model_dir`` (``cpu_model``); tests and benchmarks pass ``simulator_model`` (the load simulator: no model,
real batching and queueing), one version or speed per replica if they like. The engines stay loaded across
kills and restarts, so a restart takes milliseconds. ``FleetSettings`` tunes the servers further (gateway
settings, replica limits, more caller tenants, the gateway's key, a seed), and ``start_gateway`` can start
the gateway again with other settings in front of some of the replicas.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cloud_service.auth import hash_key
from cloud_service.config import DistributionConfig, FrontDoorConfig, Limits, ModelConfig, ServerConfig, TenantConfig

if TYPE_CHECKING:
    from cloud_service.engines.cpu import CpuEngineOptions
    from cloud_service.gateway.config import GatewayConfig
    from cloud_service.gateway.server import GatewayServer
    from cloud_service.server import ReplicaServer
    from cloud_service.servicer import ServedEngine, ServedModel
    from evaluation.routing.run import CloudSpec

HOST = "127.0.0.1"
GATEWAY_TENANT = "gateway"
GATEWAY_DEFAULTS: Mapping[str, Any] = {"health_interval_s": 0.25, "load_refresh_s": 0.1, "breaker_cooldown_s": 1.0}
"""The gateway's settings unless ``FleetSettings.gateway`` says otherwise: short health checks, so a killed or
restarted replica is noticed within a second, and short ejections."""
STOP_GRACE_S = 0.5
GATEWAY_REQUESTS_PER_MINUTE = 10_000_000
GATEWAY_TOKENS_PER_MINUTE = 1_000_000_000
"""The gateway's own quotas at the replicas: unmetered in practice (the gateway meters its callers)."""

ModelFactory = Callable[[int], "ServedModel"]
"""Replica index -> the model it serves (its name, version and engine); called once per replica, in a worker
thread (loading a model takes a while)."""


def cpu_model(model_dir: str | Path, *, model: str, version: str = "v1",
              options: CpuEngineOptions | None = None) -> ServedModel:
    """A CpuEngine over the Hugging Face model folder ``model_dir``, served as ``model@version``."""
    from cloud_service.engines.cpu import CpuEngine
    from cloud_service.servicer import ServedModel

    return ServedModel(model, version, CpuEngine(Path(model_dir), name=model, version=version, options=options))


def simulator_model(*, model: str, version: str = "v1", options: Mapping[str, Any] | None = None) -> ServedModel:
    """The load simulator served as ``model@version``; ``options`` are SimulatorOptions fields (a config's
    [models.simulator] table)."""
    from cloud_service.engines.simulator import SimulatorEngine, SimulatorOptions
    from cloud_service.servicer import ServedModel

    engine = SimulatorEngine(name=model, version=version, options=SimulatorOptions.from_table(dict(options or {})))
    return ServedModel(model, version, engine)


@dataclass(frozen=True)
class FleetSettings:
    """How the fleet's servers are set up beyond its defaults (what tests and benchmarks tune)."""

    gateway: Mapping[str, Any] = field(default_factory=dict)
    """``GatewaySettings`` fields over ``GATEWAY_DEFAULTS`` (policy, intervals, queue, replica_api_key...)."""
    replica_limits: Limits = field(default_factory=Limits)
    """Each replica's [limits]; the gateway's are the defaults."""
    other_callers: tuple[TenantConfig, ...] = ()
    """Caller tenants at the gateway besides ``tenant`` (whose key is ``api_key``)."""
    replica_key: str | None = None
    """The gateway's API key at the replicas; a fresh random one when None."""
    seed: int | None = None
    """Seeds the gateway's random choices (balancing, version split, backoff) each time it starts."""
    drain_timeout_s: float = STOP_GRACE_S
    """Every server's server.drain_timeout_s."""
    gateway_http: bool = False
    """The gateway also serves OpenAI-compatible HTTP (``LocalFleet.http_url``), on a free port."""


class LocalFleet:
    """``replicas`` replicas (CPU engines over ``model_dir`` unless ``engines`` says otherwise) behind one
    gateway, all on loopback."""

    def __init__(self, model_dir: str | Path | None = None, *, model: str, api_key: str, version: str = "v1",
                 replicas: int = 2, tenant: str = "local", distribution: DistributionConfig | None = None,
                 engine_options: CpuEngineOptions | None = None, requests_per_minute: int | None = None,
                 tokens_per_minute: int | None = None, engines: ModelFactory | None = None,
                 settings: FleetSettings | None = None) -> None:
        if replicas < 1:
            raise ValueError(f"a fleet needs at least one replica, got replicas={replicas}")
        if engines is None and model_dir is None:
            raise ValueError("give the CPU engine's model_dir, or engines (a ModelFactory)")
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.model, self.version, self.tenant = model, version, tenant
        self.api_key = api_key
        self.distribution = distribution or DistributionConfig()
        self.engine_options = engine_options
        self.replica_count = replicas
        self.settings = settings or FleetSettings()
        self._engines = engines or self._cpu_model
        quotas = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
        self._callers = (TenantConfig(tenant, hash_key(api_key),
                                      **{name: value for name, value in quotas.items() if value is not None}),
                         *self.settings.other_callers)
        """The caller tenants at the gateway (TenantConfig's default quotas where not given)."""
        self._replica_key = self.settings.replica_key or secrets.token_urlsafe(24)
        self.models: list[ServedModel] = []
        """What each replica serves, by index (loaded by ``start``)."""
        self.replicas: list[ReplicaServer | None] = []
        self.replica_ports: list[int] = []
        self.gateway: GatewayServer | None = None
        self.gateway_port = 0

    def _cpu_model(self, index: int) -> ServedModel:
        """The default ModelFactory: every replica a CpuEngine over ``model_dir``."""
        assert self.model_dir is not None
        return cpu_model(self.model_dir, model=self.model, version=self.version, options=self.engine_options)

    @property
    def target(self) -> str:
        """The gateway's address, for ``CloudSettings(target=...)`` or ``cloud_service.client``."""
        if not self.gateway_port:
            raise RuntimeError("the fleet is not started: use `async with LocalFleet(...)` or await start()")
        return f"{HOST}:{self.gateway_port}"

    @property
    def http_url(self) -> str:
        """The gateway's OpenAI-compatible base URL (``FleetSettings.gateway_http``), e.g. for ``openai.OpenAI``."""
        if self.gateway is None or not self.gateway.listener.http_port:
            raise RuntimeError("the gateway serves no HTTP: start the fleet with FleetSettings(gateway_http=True)")
        return f"http://{HOST}:{self.gateway.listener.http_port}/v1"

    @property
    def addresses(self) -> list[str]:
        """Every replica's address, by index (a killed replica keeps its port)."""
        return [f"{HOST}:{port}" for port in self.replica_ports]

    @property
    def engines(self) -> list[ServedEngine]:
        return [served.engine for served in self.models]

    # -- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> str:
        """Load the engines, start the replicas, then the gateway; returns the gateway's address."""
        try:
            await self.start_replicas()
            await self.start_gateway()
        except BaseException:
            await self.close()
            raise
        return self.target

    async def start_replicas(self) -> list[str]:
        """Load the engines (once) and start every replica; their addresses."""
        while len(self.models) < self.replica_count:
            self.models.append(await asyncio.to_thread(self._engines, len(self.models)))
        if not self.replicas:
            self.replicas = [None] * self.replica_count
            self.replica_ports = [0] * self.replica_count
        for index in range(self.replica_count):
            await self.restart_replica(index)
        return self.addresses

    async def close(self) -> None:
        """Stop the gateway and every replica, and free the engines. Safe to call twice."""
        await self.stop_gateway()
        for index in range(len(self.replicas)):
            await self.kill_replica(index)
        models, self.models = self.models, []
        for served in models:
            await asyncio.to_thread(served.engine.close)

    async def __aenter__(self) -> LocalFleet:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    # -- replicas ------------------------------------------------------------------------------------------

    def replica_config(self, index: int) -> ServerConfig:
        """Replica ``index``'s config, as its TOML file would give it."""
        served = self.models[index]
        return ServerConfig(
            models=(ModelConfig(served.name, self.model_dir or Path("."), version=served.version),),
            front_door=FrontDoorConfig(
                host=HOST, port=self.replica_ports[index], drain_timeout_s=self.settings.drain_timeout_s,
                limits=self.settings.replica_limits,
                tenants=(TenantConfig(GATEWAY_TENANT, hash_key(self._replica_key),
                                      requests_per_minute=GATEWAY_REQUESTS_PER_MINUTE,
                                      tokens_per_minute=GATEWAY_TOKENS_PER_MINUTE),),
            ),
        )

    async def kill_replica(self, index: int) -> None:
        """Stop replica ``index`` at once (its streams end mid-way, as when a pod dies); the engine stays loaded."""
        server, self.replicas[index] = self.replicas[index], None
        if server is not None:
            await server.stop(0, close_engines=False)

    async def restart_replica(self, index: int) -> None:
        """Start replica ``index`` (again), on the port it had."""
        from cloud_service.server import ReplicaServer

        if self.replicas[index] is not None:
            return
        server = ReplicaServer(self.replica_config(index), models=[self.models[index]])
        self.replica_ports[index] = await server.start()
        self.replicas[index] = server

    @property
    def live_replicas(self) -> int:
        return sum(server is not None for server in self.replicas)

    def streaming_replicas(self) -> list[int]:
        """Indices of the live replicas with a Generate stream in flight (e.g. to kill the one serving a request)."""
        return [index for index, server in enumerate(self.replicas) if server is not None and server.inference.inflight]

    # -- gateway -------------------------------------------------------------------------------------------

    def gateway_config(self, settings: Mapping[str, Any] | None = None,
                       replicas: Sequence[int] | None = None) -> GatewayConfig:
        """The gateway's config: ``GATEWAY_DEFAULTS``, then ``FleetSettings.gateway``, then ``settings``, in
        front of the replicas ``replicas`` (indices; all when None)."""
        from cloud_service.gateway.config import GatewayConfig, GatewaySettings

        members = range(self.replica_count) if replicas is None else replicas
        fields = {"replica_api_key": self._replica_key, **GATEWAY_DEFAULTS, **self.settings.gateway, **(settings or {})}
        return GatewayConfig(
            gateway=GatewaySettings(replicas=tuple(self.addresses[i] for i in members), **fields),
            front_door=FrontDoorConfig(host=HOST, port=self.gateway_port, drain_timeout_s=self.settings.drain_timeout_s,
                                       tenants=self._callers, http_port=0 if self.settings.gateway_http else None),
            distribution=self.distribution,
        )

    async def start_gateway(self, settings: Mapping[str, Any] | None = None, *,
                            replicas: Sequence[int] | None = None) -> str:
        """Start the gateway (again, on the same port) unless it runs; ``settings`` and ``replicas`` as in
        ``gateway_config``. Returns its address."""
        from cloud_service.gateway.server import GatewayServer

        if self.gateway is None:
            seed = self.settings.seed
            gateway = GatewayServer(self.gateway_config(settings, replicas),
                                    rng=random.Random(seed) if seed is not None else None)
            self.gateway_port = await gateway.start()
            self.gateway = gateway
        return self.target

    async def stop_gateway(self, grace_s: float = 0.0) -> None:
        """Stop the gateway (at once by default): the cloud becomes unreachable (its replicas keep running)."""
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            await gateway.stop(grace_s)


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


__all__ = ["FleetSettings", "LocalFleet", "ModelFactory", "cpu_model", "simulator_model", "start_cloud"]
