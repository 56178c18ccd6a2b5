"""Which replicas the gateway routes to: a static list or every A/AAAA record of a DNS name (a Kubernetes
headless Service, re-resolved every ``dns_refresh_s``), each health-checked with ``grpc.health.v1`` against
the Inference service.

    pending ──SERVING──> admitted ──NOT_SERVING / draining──> draining ──SERVING (restarted)──> admitted
       │                   │   ^
       │   EJECT_AFTER_FAILED_CHECKS failed checks   │ SERVING (and ListModels answers): re-admitted
       └──────────────────>└─> ejected ──────────────┘

Only admitted replicas in rotation (``Replica.available``: not ejected as outliers) get new requests; draining
and ejected ones keep the streams they already run. A replica that leaves DNS gets no new work and its
channel closes once its last stream ends. On admission (and every ``MODELS_REFRESH_CHECKS`` checks) the
gateway asks the replica's ``ListModels``, which says which model versions it can route there.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_service import keepalive
from cloud_service.channel import open_channel
from cloud_service.gateway.config import GatewaySettings
from cloud_service.gateway.ejection import OutlierEjection
from cloud_service.gateway.load import LoadSnapshot
from cloud_service.gateway.work import CostScale, ReplicaWork
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc

log = logging.getLogger("tandem.gateway")

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["Inference"].full_name
EJECT_AFTER_FAILED_CHECKS = 2
"""Consecutive failed health checks that eject a replica."""
MODELS_REFRESH_CHECKS = 30
"""Every this many health checks an admitted replica's ListModels is read again."""
MIN_CHECK_TIMEOUT_S = 0.5
MAX_CHECK_TIMEOUT_S = 5.0
RECONNECT_BACKOFF_MS = 100
MAX_RECONNECT_BACKOFF_MS = 1000
"""gRPC's own reconnect backoff grows to 2 minutes; a replica that comes back must be seen within a second."""
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ("grpc.enable_retries", 0),  # the gateway retries itself, on another replica
    *keepalive.CLIENT_OPTIONS,
)


class ReplicaState(StrEnum):
    PENDING = "pending"
    ADMITTED = "admitted"
    DRAINING = "draining"
    EJECTED = "ejected"


@dataclass(eq=False)
class Replica:
    address: str
    channel: grpc.aio.Channel
    ejection: OutlierEjection
    """Outlier ejection on the gateway's own failed requests to it."""
    state: ReplicaState = ReplicaState.PENDING
    models: tuple[pb.ModelInfo, ...] = ()
    served: frozenset[tuple[str, str]] = frozenset()
    """(model, version) pairs from ListModels."""
    inflight: int = 0
    """Streams the gateway runs on this replica now."""
    load: LoadSnapshot | None = None
    work: ReplicaWork = field(default_factory=ReplicaWork)
    """What the gateway's requests on it still cost (``work``); its scale is shared by the gateway's replicas."""
    failed_checks: int = 0
    problem: str = ""
    """Why the last health check failed ("" once it passes): told to callers when no replica is available."""
    checks: int = 0
    removed: bool = False
    checking: bool = False
    stub: inference_pb2_grpc.InferenceStub = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.stub = inference_pb2_grpc.InferenceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def available(self) -> bool:
        """May take a new request now."""
        return self.state is ReplicaState.ADMITTED and not self.removed and self.ejection.allows()

    def serves(self, model: str, version: str) -> bool:
        """``version`` "" means any version of ``model``."""
        if version:
            return (model, version) in self.served
        return any(name == model for name, _ in self.served)


async def resolve(name: str) -> list[str]:
    """Every address of ``host:port`` as ``ip:port`` (``[ip]:port`` for IPv6), sorted."""
    host, _, port = name.rpartition(":")
    host = host.strip("[]")
    infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    found = set()
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0])
        found.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return sorted(found)


class Membership:
    def __init__(self, settings: GatewaySettings, *, metadata: tuple[tuple[str, str], ...] = (),
                 on_change: Callable[[Replica, ReplicaState, str], None] = lambda r, s, why: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``on_change(replica, new_state, reason)`` is told of every state change (metrics, logs)."""
        self.settings = settings
        self.replicas: dict[str, Replica] = {}
        self._metadata = metadata
        self._on_change = on_change
        self._clock = clock
        self._check_timeout = min(MAX_CHECK_TIMEOUT_S, max(MIN_CHECK_TIMEOUT_S, settings.health_interval_s))
        self.cost_scale = CostScale()
        """The mean cost of a routed request, shared by every replica's work (``work``)."""
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the member list ---------------------------------------------------------------------------------

    def members(self) -> list[Replica]:
        return [r for r in self.replicas.values() if not r.removed]

    def available(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.available]

    async def refresh_addresses(self) -> None:
        """Add new addresses, retire vanished ones (they finish their streams first)."""
        if self.settings.discovery_dns:
            try:
                addresses = await resolve(self.settings.discovery_dns)
            except (OSError, UnicodeError) as exc:  # keep the current members through a DNS hiccup
                log.warning("DNS resolution failed", extra={"fields": {"name": self.settings.discovery_dns,
                                                                        "error": str(exc)}})
                return
        else:
            addresses = list(self.settings.replicas)
        for address in addresses:
            replica = self.replicas.get(address)
            if replica is None:
                self.replicas[address] = Replica(
                    address, open_channel(address, self.settings.replica_tls, options=CHANNEL_OPTIONS),
                    OutlierEjection(self.settings.breaker_failures, self.settings.breaker_cooldown_s, self._clock),
                    work=ReplicaWork(self.cost_scale),
                )
                log.info("replica found", extra={"fields": {"replica": address}})
            elif replica.removed:
                replica.removed = False
        for address, replica in self.replicas.items():
            if address not in addresses and not replica.removed:
                replica.removed = True
                log.info("replica left discovery", extra={"fields": {"replica": address}})
        await self._reap()

    async def _reap(self) -> None:
        for address, replica in list(self.replicas.items()):
            if replica.removed and replica.inflight == 0:
                del self.replicas[address]
                await replica.channel.close()

    # -- health ------------------------------------------------------------------------------------------

    async def check(self, replica: Replica) -> None:
        """One health check; admits, re-admits, marks draining or (after repeated failures) ejects."""
        replica.checks += 1
        try:
            response = await replica.health.Check(health_pb2.HealthCheckRequest(service=INFERENCE_SERVICE),
                                                  timeout=self._check_timeout)
        except grpc.aio.AioRpcError as exc:
            self._failed_check(replica, f"health check failed: {exc.code().name}: {exc.details()}")
            return
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            replica.failed_checks, replica.problem = 0, ""
            self.mark_draining(replica, "health NOT_SERVING")
            return
        refresh = replica.state is not ReplicaState.ADMITTED or replica.checks % MODELS_REFRESH_CHECKS == 0
        problem = await self.refresh_models(replica) if refresh else None
        if problem:
            self._failed_check(replica, problem)
            return
        replica.failed_checks, replica.problem = 0, ""
        if replica.state is not ReplicaState.ADMITTED:
            if replica.state is ReplicaState.EJECTED:
                replica.ejection.record_success()  # it was down and is back: a clean slate
            self._set(replica, ReplicaState.ADMITTED, "health SERVING")

    async def refresh_models(self, replica: Replica) -> str | None:
        """Read the replica's ListModels; the problem when that fails (with the gateway's key), else None."""
        try:
            response = await replica.stub.ListModels(pb.ListModelsRequest(), timeout=self._check_timeout,
                                                     metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            problem = f"ListModels failed: {exc.code().name}: {exc.details()}"
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                problem += " (check gateway.replica_api_key and the replica's [[tenants]])"
            log.warning("ListModels failed", extra={"fields": {"replica": replica.address, "problem": problem}})
            return problem
        replica.models = tuple(response.models)
        replica.served = frozenset((m.name, m.version) for m in response.models)
        return None

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.members()))

    def suspect(self, replica: Replica) -> None:
        """Check this replica now (a request to it just failed) rather than at the next interval."""
        if replica.checking or replica.removed:
            return
        replica.checking = True

        async def check_now() -> None:
            try:
                await self.check(replica)
            finally:
                replica.checking = False

        task = asyncio.get_running_loop().create_task(check_now())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def mark_draining(self, replica: Replica, reason: str) -> None:
        if replica.state is not ReplicaState.DRAINING:
            self._set(replica, ReplicaState.DRAINING, reason)

    def _failed_check(self, replica: Replica, reason: str) -> None:
        replica.problem = reason
        replica.failed_checks += 1
        if replica.failed_checks >= EJECT_AFTER_FAILED_CHECKS and replica.state is not ReplicaState.EJECTED:
            self._set(replica, ReplicaState.EJECTED, reason)

    def _set(self, replica: Replica, state: ReplicaState, reason: str) -> None:
        previous, replica.state = replica.state, state
        if state is ReplicaState.EJECTED:
            replica.load = None  # whatever it reported is stale when it comes back
        log.info("replica %s", state.value, extra={"fields": {"replica": replica.address, "from": previous.value,
                                                               "reason": reason}})
        self._on_change(replica, state, reason)

    # -- the loops ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the replicas and check each once (so a fresh gateway routes at once)."""
        await self.refresh_addresses()
        await self.check_all()

    async def run_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await self.check_all()
            await self._reap()

    async def run_discovery(self) -> None:
        while self.settings.discovery_dns:
            await asyncio.sleep(self.settings.dns_refresh_s)
            await self.refresh_addresses()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for replica in self.replicas.values():
            await replica.channel.close()
        self.replicas.clear()
