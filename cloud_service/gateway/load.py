"""Live load of each replica: ``GetLoad`` polled on a short interval, adjusted by the gateway's own in-flight
counts so that requests sent since the last report count at once.

    outstanding = max(in-flight here, running + waiting (reported) + in-flight here - in-flight at the report)
    utilization = max(outstanding / max_running, kv_cache_usage)

Utilization is in batch fractions: 1.0 is a full batch (or a full KV cache); above 1.0 requests queue on the
replica. A replica is *saturated* when it runs a full batch and ``replica_queue_limit`` or more wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from cloud_service.wire.v1 import inference_pb2 as pb

if TYPE_CHECKING:
    from cloud_service.gateway.membership import Replica

log = logging.getLogger("tandem.gateway")

UNKNOWN_MAX_RUNNING = 16
"""Batch size assumed for a replica that has not reported its load yet."""
LOAD_TIMEOUT_FACTOR = 4
"""A GetLoad call may take this many poll intervals (at least MIN_LOAD_TIMEOUT_S) before it counts as failed."""
MIN_LOAD_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class LoadSnapshot:
    running: int
    waiting: int
    max_running: int
    kv_cache_usage: float
    inflight_at_report: int
    """The gateway's own in-flight count on the replica when the report arrived."""
    at: float


def outstanding(replica: Replica) -> float:
    """Requests on the replica now (running + waiting), as best known here."""
    load = replica.load
    if load is None:
        return float(replica.inflight)
    return float(max(replica.inflight, load.running + load.waiting + replica.inflight - load.inflight_at_report))


def capacity(replica: Replica) -> int:
    load = replica.load
    return max(1, load.max_running) if load is not None else UNKNOWN_MAX_RUNNING


def utilization(replica: Replica) -> float:
    load = replica.load
    kv = load.kv_cache_usage if load is not None else 0.0
    return max(outstanding(replica) / capacity(replica), kv)


def saturated(replica: Replica, queue_limit: int) -> bool:
    return outstanding(replica) >= capacity(replica) + queue_limit


class LoadTracker:
    """Polls every admitted replica's ``GetLoad`` each ``interval_s`` and keeps the last report on it."""

    def __init__(self, interval_s: float, *, metadata: tuple[tuple[str, str], ...] = (),
                 on_draining: Callable[[Replica], None] = lambda r: None,
                 on_failure: Callable[[Replica], None] = lambda r: None,
                 on_refresh: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.timeout_s = max(MIN_LOAD_TIMEOUT_S, LOAD_TIMEOUT_FACTOR * interval_s)
        self._metadata = metadata
        self._on_draining = on_draining
        self._on_failure = on_failure
        self._on_refresh = on_refresh
        self._clock = clock

    async def poll(self, replica: Replica) -> None:
        try:
            report: pb.LoadReport = await replica.stub.GetLoad(pb.GetLoadRequest(), timeout=self.timeout_s,
                                                               metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            log.debug("GetLoad failed", extra={"fields": {"replica": replica.address, "code": exc.code().name}})
            self._on_failure(replica)
            return
        # The in-flight count when the answer arrives: requests sent while the call was out may already be in
        # the report, and counting them twice would herd traffic away; the max() in outstanding() covers those
        # that were not.
        replica.load = LoadSnapshot(report.running, report.waiting, report.max_running, report.kv_cache_usage,
                                    replica.inflight, self._clock())
        if report.draining:
            self._on_draining(replica)

    async def poll_all(self, replicas: Iterable[Replica]) -> None:
        await asyncio.gather(*(self.poll(r) for r in replicas))
        self._on_refresh()

    async def run(self, replicas: Callable[[], Iterable[Replica]]) -> None:
        """Poll forever (cancel the task to stop)."""
        while True:
            started = self._clock()
            await self.poll_all(replicas())
            await asyncio.sleep(max(0.0, self.interval_s - (self._clock() - started)))
