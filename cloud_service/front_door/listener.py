"""The front door's gRPC server, the same for a replica and the gateway.

    listener = Listener(config.front_door, servicer, admission, distribution=config.distribution,
                        metrics=metrics, log=log)
    port = await listener.start()      # bind (TLS / mutual TLS), start, /metrics, every service SERVING
    await listener.drain()             # readiness NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish
    await listener.stop()

With ``[server] http_port`` set, OpenAI-compatible HTTP (``cloud_service.openai_api``) is served beside gRPC;
its calls enter through a loopback-only gRPC port, so they pass the same front door. The server runs the auth
interceptor (``cloud_service.auth``: API keys -> tenants; health and reflection need
none), bounds message sizes, and accepts the clients' keepalive pings. Next to the Inference servicer it
serves ``grpc.health.v1``, reflection, and ModelDistribution when ``distribution`` names bundles. Liveness (the
"" service) stays SERVING through a drain; readiness (Inference, ModelDistribution) turns NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from cloud_service import keepalive
from cloud_service.auth import AuthInterceptor, KeyRing
from cloud_service.config import DistributionConfig
from cloud_service.front_door.admission import Admission
from cloud_service.front_door.config import FrontDoorConfig, TlsConfig
from cloud_service.wire.v1 import distribution_pb2, inference_pb2, inference_pb2_grpc

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
DISTRIBUTION_SERVICE = distribution_pb2.DESCRIPTOR.services_by_name["ModelDistribution"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
DRAIN_POLL_S = 0.05
TRANSPORT_LIMIT_FACTOR = 2
"""The servicer refuses requests over limits.max_message_bytes with INVALID_ARGUMENT; the transport's own
bound (which answers RESOURCE_EXHAUSTED) sits this many times above it as a backstop."""


GENERATE_METHOD = f"/{INFERENCE_SERVICE}/Generate"


CUT_WAIT_S = 2.0
"""After the drain timeout cut the streams left, how long they get to send their last chunk and trailers."""


class FrontDoorServicer(inference_pb2_grpc.InferenceServicer):
    """The Inference servicer behind a front door (a replica's, the gateway's)."""

    async def cut_streams(self) -> None:
        """End every stream still running with UNAVAILABLE and ``tandem-delivered-tokens`` (drain timed out)."""
        raise NotImplementedError


class MetricsEndpoint(Protocol):
    def serve(self, port: int, host: str = "0.0.0.0") -> int: ...

    def record_refusal(self, status: str) -> None:
        """A Generate call refused before its body was read (no model is known)."""


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """The server's certificate and key; with ``client_ca``, clients must present a certificate it signed."""
    root = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())], root_certificates=root, require_client_auth=root is not None
    )


class Listener:
    def __init__(self, config: FrontDoorConfig, servicer: FrontDoorServicer,
                 admission: Admission[Any], *, distribution: DistributionConfig, metrics: MetricsEndpoint,
                 log: logging.Logger) -> None:
        self.config = config
        self.servicer = servicer
        self.admission = admission
        self.metrics = metrics
        self.log = log
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[AuthInterceptor(KeyRing(config.tenants) if config.authenticates else None,
                                          on_refusal=self._refused)],
            options=[
                ("grpc.max_receive_message_length", TRANSPORT_LIMIT_FACTOR * config.limits.max_message_bytes),
                ("grpc.max_send_message_length", TRANSPORT_LIMIT_FACTOR * config.limits.max_message_bytes),
                *keepalive.SERVER_OPTIONS,
            ],
        )
        inference_pb2_grpc.add_InferenceServicer_to_server(servicer, self.server)
        services = [INFERENCE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME]
        self.readiness = [INFERENCE_SERVICE]
        """The services whose readiness a drain turns NOT_SERVING."""
        if distribution.bundles:
            from cloud_service.distribution.service import serve_catalog

            serve_catalog(self.server, distribution)
            services.append(DISTRIBUTION_SERVICE)
            self.readiness.append(DISTRIBUTION_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(services, self.server)
        self.port = 0
        self.metrics_port = 0
        self.http_port = 0
        """The OpenAI-compatible HTTP port (0 when [server] http_port is unset)."""
        self.http: Any = None

    def _refused(self, method: str, code: grpc.StatusCode) -> None:
        if method == GENERATE_METHOD:
            self.metrics.record_refusal(code.name)

    async def start(self) -> int:
        """Bind (with TLS when configured), start serving, open /metrics (when metrics_port is set) and mark
        every service SERVING; returns the bound port."""
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, server_credentials(self.config.tls))
        hop = self.server.add_insecure_port("127.0.0.1:0") if self.config.http_port is not None else 0
        await self.server.start()
        if self.config.http_port is not None:  # HTTP calls come in through gRPC, on a loopback-only port
            from cloud_service.openai_api.server import HttpFrontDoor

            self.http = HttpFrontDoor(f"127.0.0.1:{hop}", limits=self.config.limits,
                                      draining=lambda: self.admission.draining)
            self.http_port = await self.http.start(self.config.host, self.config.http_port, self.config.tls)
        if self.config.metrics_port:
            self.metrics_port = self.metrics.serve(self.config.metrics_port, self.config.host)
        for service in ("", *self.readiness):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work (readiness NOT_SERVING, new Generate calls UNAVAILABLE) and wait for the calls in
        flight to finish, up to ``timeout_s`` (default drain_timeout_s); True when all finished in time. Streams
        still running then are cut: each ends UNAVAILABLE with ``tandem-delivered-tokens``."""
        timeout_s = self.config.drain_timeout_s if timeout_s is None else timeout_s
        self.admission.draining = True
        for service in self.readiness:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + timeout_s
        while self.admission.inflight and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        left = len(self.admission.inflight)
        if left:  # cut what is left, so each caller gets the tokens it has and can continue elsewhere
            await self.servicer.cut_streams()
            deadline = time.monotonic() + CUT_WAIT_S
            while self.admission.inflight and time.monotonic() < deadline:
                await asyncio.sleep(DRAIN_POLL_S)
        self.log.info("drained", extra={"fields": {"unfinished": left}})
        return left == 0

    async def stop(self, grace_s: float = 1.0) -> None:
        """Every service NOT_SERVING, then stop: calls still running get ``grace_s`` before they are cancelled."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.http is not None:
            await self.http.stop()


__all__ = ["DISTRIBUTION_SERVICE", "INFERENCE_SERVICE", "FrontDoorServicer", "Listener", "server_credentials"]
