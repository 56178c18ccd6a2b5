"""The gateway server: the Inference API (``GatewayServicer``) behind the front door a replica has too
(``cloud_service.front_door``: health, reflection, auth and tenant keys, metrics, optional TLS, graceful
drain), plus the membership, load and quota-peer loops.

    gateway = GatewayServer(config)
    port = await gateway.start()          # finds and checks the replicas once, then SERVING
    gateway.set_weights("assistant", {"v1": 90, "v2": 10})   # the canary split, at run time
    await gateway.drain()                 # readiness NOT_SERVING, new calls UNAVAILABLE, streams finish
    await gateway.stop()

``serve_gateway(config, config_path)`` runs one until SIGTERM/SIGINT (then drains and returns; the CLI exits
0) and re-reads ``[[gateway.versions]]`` from ``config_path`` on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Mapping
from pathlib import Path

from cloud_service.channel import bearer_metadata
from cloud_service.errors import ConfigError
from cloud_service.front_door.listener import Listener
from cloud_service.gateway.balancing import Balancer
from cloud_service.gateway.config import GatewayConfig, load_gateway_config
from cloud_service.gateway.load import LoadTracker
from cloud_service.gateway.membership import Membership, Replica, ReplicaState
from cloud_service.gateway.metrics import GatewayMetrics
from cloud_service.gateway.queueing import AdmissionQueue
from cloud_service.gateway.quota_peers import QuotaPeers
from cloud_service.gateway.routing import Router
from cloud_service.gateway.servicer import GatewayServicer
from cloud_service.gateway.versions import VersionTable
from cloud_service.quota import Quotas

log = logging.getLogger("tandem.gateway")


class GatewayServer:
    def __init__(self, config: GatewayConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        settings = config.gateway
        self.metrics = GatewayMetrics()
        rng = rng or random.Random()
        metadata = bearer_metadata(settings.replica_api_key)
        self.membership = Membership(settings, metadata=metadata, on_change=self._replica_changed)
        self.versions = VersionTable(settings.weights(), rng)
        self.metrics.show_weights(self.versions.all())
        self.queue: AdmissionQueue[Replica] = AdmissionQueue(settings.max_queue, settings.queue_timeout_s)
        self.balancer = Balancer(settings.policy, affinity_imbalance=settings.affinity_imbalance,
                                 affinity_max_keys=settings.affinity_max_keys, rng=rng)
        self.router = Router(self.membership, self.balancer, self.versions, self.queue,
                             queue_limit=settings.replica_queue_limit,
                             on_affinity=lambda outcome: self.metrics.affinity.labels(outcome.value).inc())
        self.loads = LoadTracker(
            settings.load_refresh_s, metadata=metadata,
            on_draining=lambda r: self.membership.mark_draining(r, "GetLoad says draining"),
            on_failure=self.membership.suspect, on_refresh=self.queue.notify,
        )
        self.quotas = Quotas()
        self.quota_peers = QuotaPeers(settings.quota_peers_dns, self.quotas, settings.dns_refresh_s) \
            if settings.quota_peers_dns else None
        front_door = config.front_door
        self.inference = GatewayServicer(self.router, settings=settings, limits=front_door.limits,
                                         metrics=self.metrics, replica_metadata=metadata, quotas=self.quotas,
                                         log_prompts=front_door.log_prompts, rng=rng)
        self.metrics.watch(lambda: len(self.queue), self._state_counts)
        self.listener = Listener(front_door, self.inference, self.inference.admission,
                                 distribution=config.distribution, metrics=self.metrics, log=log)
        self._loops: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        """The bound port (0 before ``start``)."""
        return self.listener.port

    @property
    def metrics_port(self) -> int:
        return self.listener.metrics_port

    # -- life cycle --------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Find and check the replicas once, poll their loads, bind and mark SERVING; returns the port."""
        await self.membership.start()
        await self.loads.poll_all(self.membership.available())
        if self.quota_peers is not None:
            await self.quota_peers.refresh()
        port = await self.listener.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self.membership.run_health(), name="tandem-gateway-health"),
            loop.create_task(self.membership.run_discovery(), name="tandem-gateway-discovery"),
            loop.create_task(self.loads.run(self.membership.available), name="tandem-gateway-load"),
        ]
        if self.quota_peers is not None:
            self._loops.append(loop.create_task(self.quota_peers.run(), name="tandem-gateway-quota-peers"))
        settings = self.config.gateway
        log.info("serving", extra={"fields": {
            "port": port, "metrics_port": self.metrics_port, "http_port": self.listener.http_port,
            "tls": self.config.front_door.tls is not None,
            "policy": settings.policy, "replicas": sorted(self.membership.replicas),
            "available": len(self.membership.available()), "discovery_dns": settings.discovery_dns,
        }})
        return port

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work (readiness NOT_SERVING, new Generate calls UNAVAILABLE) and wait for in-flight and
        queued streams to finish, up to ``timeout_s``; True when all finished. Liveness stays SERVING."""
        return await self.listener.drain(timeout_s)

    async def stop(self, grace_s: float = 1.0) -> None:
        """Cancel what is left, stop serving and close the replica channels."""
        await self.listener.stop(grace_s)
        self.inference.cancel_background()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.membership.close()

    # -- run-time changes --------------------------------------------------------------------------------

    def set_weights(self, model: str, weights: Mapping[str, float]) -> None:
        """Change ``model``'s split of unpinned traffic now; running streams keep their version.
        ConfigError for invalid weights."""
        self.versions.set_weights(model, weights)
        self.metrics.show_weights(self.versions.all())
        log.info("weights changed", extra={"fields": {"model": model, "weights": dict(weights)}})

    def reload(self, path: str | Path | None) -> None:
        """Apply the [[gateway.versions]] of the config file at ``path`` (SIGHUP); other changes need a
        restart. A bad file (or none: a gateway started from flags alone) is logged and changes nothing."""
        if path is None:
            log.warning("SIGHUP ignored: this gateway was started without a config file to re-read")
            return
        try:
            fresh = load_gateway_config(path)
        except ConfigError as exc:
            log.error("config reload failed; nothing changed", extra={"fields": {"path": str(path),
                                                                               "error": str(exc)}})
            return
        self.versions.replace(fresh.gateway.weights())
        self.metrics.show_weights(self.versions.all())
        log.info("config reloaded", extra={"fields": {"path": str(path), "weights": self.versions.all()}})

    # -- helpers -----------------------------------------------------------------------------------------

    def _replica_changed(self, replica: Replica, state: ReplicaState, reason: str) -> None:
        if state is ReplicaState.EJECTED:
            self.metrics.ejections.labels(replica.address, "health").inc()
        if state is ReplicaState.ADMITTED:
            self.queue.notify()

    def _state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for replica in self.membership.members():
            counts[replica.state.value] = counts.get(replica.state.value, 0) + 1
            counts["available"] = counts.get("available", 0) + replica.available
        return counts


async def serve_gateway(config: GatewayConfig, config_path: str | Path | None = None) -> None:
    """Run a gateway until SIGTERM/SIGINT, then drain (up to drain_timeout_s) and stop; SIGHUP re-reads the
    version weights from ``config_path``."""
    gateway = GatewayServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload, config_path)
    await gateway.start()  # signals are handled from before the "serving" line: a prompt one is not fatal
    await stop.wait()
    log.info("signal received: draining", extra={"fields": {"timeout_s": config.front_door.drain_timeout_s}})
    await gateway.drain()
    await gateway.stop()
