"""A real gRPC health server on loopback for the link monitor tests (sync grpc, restartable on its port), and
a bounded wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVER_WORKERS = 4
WAIT_STEP_S = 0.01
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RecordingHealth(health.HealthServicer):
    """The stock health servicer that also keeps each Check's metadata and can hold Checks (a hung server)."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: list[dict[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    def Check(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        self.release.wait()
        return super().Check(request, context)


class HealthServer:
    """grpc.health.v1 on 127.0.0.1; ``stop()`` and ``start()`` again reuse the same port (an outage)."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.credentials = credentials
        self.health = RecordingHealth()
        self.port = 0
        self._server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> HealthServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        server.start()
        self._server = server
        self.set(SERVING)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.health.release.set()
            self._server.stop(grace=None).wait()
            self._server = None

    def set(self, status: int, service: str = "") -> None:
        self.health.set(service, status)




def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(WAIT_STEP_S)
    return condition()
