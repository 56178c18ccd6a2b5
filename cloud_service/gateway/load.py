"""Live load of each replica: ``GetLoad`` polled on a short interval, combined with what the gateway knows
of its own requests there (``work``: their prompts until the first chunk, the tokens they still have to
generate), so that requests sent since the last report count at once, each by what it will cost.

    load        = work of the gateway's requests / mean request cost               (in average requests)
                + max(0, running + waiting (reported) - gateway's in-flight at the report)
                                                                         (requests other callers sent it)
    batch       = min(max_running, KV-limited batch)
    utilization = load / batch

The *KV-limited batch* is how many sequences of the replica's current mix fill its KV cache:
``running / kv_cache_usage`` from reports where the cache is at least ``KV_BATCH_MIN_USAGE`` full (fewer
sequences would make it a guess), smoothed over reports (``KV_BATCH_SMOOTHING``). A compute-bound replica
(a CPU engine, or a GPU whose cache never fills) is limited by ``max_running``; a GPU replica serving long
prompts is limited by its KV cache long before ``max_num_seqs``, and then 1.0 means a full cache rather
than a batch it can never run.

Utilization is in batch fractions: 1.0 is a full batch (or a full KV cache); above 1.0 requests queue on the
replica. The affinity imbalance guard compares utilizations. The balancing policies compare what a new
request would wait for, which also weighs how fast each replica has been going (``work.DecodePace``):

    expected wait = (load + 1) / batch x pace / reference pace

with the reference the median pace of the candidates (a factor of 1 until two of them have one; clamped to
``PACE_FACTOR_LIMITS``). On equal replicas the factors stay near 1 and this orders replicas as utilization
does; a replica at half speed counts its work twice, so it gets the share of traffic it can finish. A replica is
*saturated* (admission control) when it runs a full batch and ``replica_queue_limit`` or more wait, in
requests, not work:

    outstanding = max(in-flight here, running + waiting (reported) + in-flight here - in-flight at the report)
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
KV_BATCH_MIN_USAGE = 0.25
"""A report gives a KV-limited batch only when its cache is at least this full (enough sequences to be a mix)."""
KV_BATCH_MIN_RUNNING = 2
"""... and runs at least this many sequences."""
KV_BATCH_SMOOTHING = 0.2
"""Weight of a new report's KV-limited batch in the smoothed one."""
LOAD_TIMEOUT_FACTOR = 4
"""A GetLoad call may take this many poll intervals (at least MIN_LOAD_TIMEOUT_S) before it counts as failed."""
MIN_LOAD_TIMEOUT_S = 0.5
PACE_FACTOR_LIMITS = (0.25, 4.0)
"""A replica's pace counts at most this much faster or slower than the reference (one odd sample, or a pace
measured long ago, cannot send it all or none of the traffic)."""


@dataclass(frozen=True)
class LoadSnapshot:
    running: int
    waiting: int
    max_running: int
    kv_cache_usage: float
    inflight_at_report: int
    """The gateway's own in-flight count on the replica when the report arrived."""
    at: float
    kv_batch: float | None = None
    """Sequences of the current mix that fill the KV cache (smoothed over reports); None until measured."""


def outstanding(replica: Replica) -> float:
    """Requests on the replica now (running + waiting), as best known here."""
    load = replica.load
    if load is None:
        return float(replica.inflight)
    return float(max(replica.inflight, load.running + load.waiting + replica.inflight - load.inflight_at_report))


def capacity(replica: Replica) -> int:
    load = replica.load
    return max(1, load.max_running) if load is not None else UNKNOWN_MAX_RUNNING


def weighted_load(replica: Replica) -> float:
    """The replica's load in average requests: the gateway's own by their work, other callers' by count."""
    load = replica.load
    others = max(0, load.running + load.waiting - load.inflight_at_report) if load is not None else 0
    return replica.work.requests + others


def batch(replica: Replica) -> float:
    """Sequences the replica can run at once: its batch, or fewer when its KV cache fills first."""
    load = replica.load
    if load is not None and load.kv_batch is not None:
        return max(1.0, min(float(capacity(replica)), load.kv_batch))
    return float(capacity(replica))


def utilization(replica: Replica) -> float:
    return weighted_load(replica) / batch(replica)


def reference_pace(candidates: Iterable[Replica]) -> float | None:
    """The median seconds per token of the candidates that have a pace; None when fewer than two do."""
    paces = sorted(p for p in (c.work.pace.seconds_per_token for c in candidates) if p is not None and p > 0)
    if len(paces) < 2:
        return None
    middle = len(paces) // 2
    return paces[middle] if len(paces) % 2 else (paces[middle - 1] + paces[middle]) / 2


def expected_wait(replica: Replica, reference: float | None) -> float:
    """What a new request would wait for on ``replica``, in batch fractions of a reference-paced replica."""
    share = (weighted_load(replica) + 1) / batch(replica)
    pace = replica.work.pace.seconds_per_token
    if reference is None or pace is None or pace <= 0:
        return share
    low, high = PACE_FACTOR_LIMITS
    return share * min(high, max(low, pace / reference))


def kv_batch(report: pb.LoadReport, previous: LoadSnapshot | None) -> float | None:
    """The smoothed KV-limited batch after ``report`` (see the module docstring)."""
    before = previous.kv_batch if previous is not None else None
    if report.kv_cache_usage < KV_BATCH_MIN_USAGE or report.running < KV_BATCH_MIN_RUNNING:
        return before
    measured = report.running / report.kv_cache_usage
    return measured if before is None else before + KV_BATCH_SMOOTHING * (measured - before)


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
                                    replica.inflight, self._clock(), kv_batch(report, replica.load))
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
