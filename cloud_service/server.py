"""The replica server: engines from the config, the Inference and ModelDistribution services, health and
reflection, auth, metrics, optional (m)TLS, and graceful drain.

    server = ReplicaServer(config)            # or ReplicaServer(config, models=[ServedModel(...)]) in tests
    port = await server.start()
    ...
    await server.drain()                      # readiness NOT_SERVING, refuse new calls, let streams finish
    await server.stop()

``serve(config)`` runs one until SIGTERM or SIGINT, drains, and returns (the CLI then exits 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from cloud_service import keepalive
from cloud_service.auth import AuthInterceptor, KeyRing
from cloud_service.config import DistributionConfig, ModelConfig, ServerConfig
from cloud_service.metrics import ServerMetrics
from cloud_service.servicer import InferenceServicer, ServedEngine, ServedModel
from cloud_service.wire.v1 import distribution_pb2, inference_pb2, inference_pb2_grpc

log = logging.getLogger("tandem.replica")

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
DISTRIBUTION_SERVICE = distribution_pb2.DESCRIPTOR.services_by_name["ModelDistribution"].full_name
DRAIN_POLL_S = 0.05
TRANSPORT_LIMIT_FACTOR = 2


def build_engine(model: ModelConfig) -> ServedEngine:
    """The engine a [[models]] entry asks for."""
    if model.engine == "vllm":
        from cloud_service.engines.vllm import VllmEngine, VllmEngineOptions

        return VllmEngine(model.path, name=model.name, version=model.version,  # type: ignore[return-value]
                          options=VllmEngineOptions(**model.engine_options))
    if model.engine == "simulator":
        from cloud_service.engines.simulator import SimulatorEngine, SimulatorOptions

        return SimulatorEngine(name=model.name, version=model.version,
                               options=SimulatorOptions.from_table(model.engine_options))
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    return CpuEngine(model.path, name=model.name, version=model.version,
                     options=CpuEngineOptions(**model.engine_options))


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls is None:
        return None
    tls = config.tls
    root = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())], root_certificates=root, require_client_auth=root is not None
    )


def add_shared_services(server: grpc.aio.Server, health: health_aio.HealthServicer,
                        distribution: DistributionConfig) -> list[str]:
    """What a replica and the gateway both serve next to Inference (already added): health, the bundle
    catalog when ``distribution`` names bundles, and reflection. Returns the services whose readiness the
    server reports (Inference, and ModelDistribution when served)."""
    services = [INFERENCE_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME]
    readiness = [INFERENCE_SERVICE]
    if distribution.bundles:
        from cloud_service.distribution.service import serve_catalog

        serve_catalog(server, distribution)
        services.append(DISTRIBUTION_SERVICE)
        readiness.append(DISTRIBUTION_SERVICE)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(services, server)
    return readiness


class ReplicaServer:
    def __init__(self, config: ServerConfig, models: Sequence[ServedModel] | None = None) -> None:
        self.config = config
        self.models = list(models) if models is not None else [
            ServedModel(m.name, m.version, build_engine(m)) for m in config.models
        ]
        self.metrics = ServerMetrics()
        for model in self.models:
            engine = model.engine
            self.metrics.watch_engine(model.name, lambda e=engine: e.running, lambda e=engine: e.waiting)
        self.inference = InferenceServicer(
            self.models, limits=config.limits, metrics=self.metrics, log_prompts=config.log_prompts
        )
        self.health = health_aio.HealthServicer()
        keys = None if config.allow_unauthenticated and not config.tenants else KeyRing(config.tenants)
        self.server = grpc.aio.server(
            interceptors=[AuthInterceptor(keys)],
            # The servicer refuses requests over limits.max_message_bytes with INVALID_ARGUMENT; the transport's
            # own bound (which answers RESOURCE_EXHAUSTED) sits above it as a backstop.
            options=[
                ("grpc.max_receive_message_length", TRANSPORT_LIMIT_FACTOR * config.limits.max_message_bytes),
                ("grpc.max_send_message_length", TRANSPORT_LIMIT_FACTOR * config.limits.max_message_bytes),
                *keepalive.SERVER_OPTIONS,
            ],
        )
        inference_pb2_grpc.add_InferenceServicer_to_server(self.inference, self.server)
        self.readiness = add_shared_services(self.server, self.health, config.distribution)
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> int:
        """Bind, start serving and mark every service SERVING; returns the bound port."""
        address = f"{self.config.host}:{self.config.port}"
        credentials = _credentials(self.config)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        await self.server.start()
        if self.config.metrics_port:
            self.metrics_port = self.metrics.serve(self.config.metrics_port, self.config.host)
        for service in ("", *self.readiness):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"fields": {
            "port": self.port, "metrics_port": self.metrics_port, "tls": self.config.tls is not None,
            "models": [f"{m.name}@{m.version}" for m in self.models],
        }})
        return self.port

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work (readiness NOT_SERVING, new Generate calls UNAVAILABLE) and wait for in-flight
        streams to finish, up to ``timeout_s``; True when all finished in time. Liveness stays SERVING."""
        timeout_s = self.config.drain_timeout_s if timeout_s is None else timeout_s
        self.inference.draining = True
        for service in self.readiness:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + timeout_s
        while self.inference.inflight and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        left = len(self.inference.inflight)
        log.info("drained", extra={"fields": {"unfinished": left}})
        return left == 0

    async def stop(self, grace_s: float = 1.0, *, close_engines: bool = True) -> None:
        """Cancel what is left, stop the server and (unless told not to) close the engines."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if close_engines:
            for model in self.models:
                await asyncio.to_thread(model.engine.close)


async def serve(config: ServerConfig, *, models: Sequence[ServedModel] | None = None) -> None:
    """Run a replica until SIGTERM/SIGINT, then drain (up to drain_timeout_s) and stop."""
    server = ReplicaServer(config, models)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining", extra={"fields": {"timeout_s": config.drain_timeout_s}})
    await server.drain()
    await server.stop()
