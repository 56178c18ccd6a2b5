"""The gateway's Inference service: the replica's API in front of many replicas.

Generate passes the front door's checks as at a replica (``front_door.admission``: draining -> tenant and model
permission -> request size and id -> duplicate id -> quota), then NOT_FOUND when no replica serves the model,
then tries up to ``max_attempts`` replicas:

- before the first chunk, a failure another replica could avoid (``retry.retry_reason``) moves the request
  to another replica after a backoff with jitter; the caller's own mistakes are answered as the replica
  answered them;
- after the first chunk, chunks are forwarded as they come (per chunk, only the replica's work count of the
  load estimate is updated: ``work``); when the replica fails mid-stream, the stream goes on on another
  replica of the same version from the tokens delivered (``gateway.resume``): the caller receives one
  unbroken answer (for greedy decoding exactly the uninterrupted one) and ``tandem-resumed`` = the switches in
  its trailing metadata. Only when no replica can continue it (within ``max_attempts`` in all) does the stream
  end with UNAVAILABLE and ``tandem-delivered-tokens`` = tokens delivered, so the SDK continues elsewhere;
- the caller cancelling, or its deadline passing, cancels the upstream call (the replica frees the slot);
- a drain that times out cuts what is left (``cut_streams``): UNAVAILABLE with ``tandem-delivered-tokens``.

Every call is counted by its final status in the access log and the metrics, refusals included, and charged
to its tenant's token quota for what it used however it ended: its final usage, or (cancelled, deadline,
failure) the prompt's estimate plus every token streamed.

Upstream, the request carries the gateway's own API key, no tenant, and the id ``<tenant>/<request id>``
(unique across the gateway's callers); Abort finds the replica running it. GetLoad reports the fleet's
totals (plus the gateway's queue as waiting); ListModels the union of the replicas' models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from cloud_service.channel import trailing_value
from cloud_service.errors import DELIVERED_METADATA, DRAINING_METADATA, RESUMED_METADATA, RETRY_AFTER_METADATA
from cloud_service.front_door.access_log import AccessLog, CallRecord
from cloud_service.front_door.admission import (
    Admission,
    CallKey,
    refuse,
    retry_after_ms,
)
from cloud_service.front_door.config import Limits
from cloud_service.front_door.listener import FrontDoorServicer
from cloud_service.gateway.config import GatewaySettings
from cloud_service.gateway.load import outstanding
from cloud_service.gateway.membership import Membership, Replica, ReplicaState
from cloud_service.gateway.metrics import GatewayMetrics
from cloud_service.gateway.queueing import QueueFullError
from cloud_service.gateway.resume import Resume
from cloud_service.gateway.retry import GATEWAY_KEY_REFUSED, is_replica_fault, retry_delay, retry_reason
from cloud_service.gateway.routing import NoReplicaError, Plan, Router
from cloud_service.gateway.work import RequestWork, prompt_tokens
from cloud_service.quota import Quotas
from cloud_service.wire.v1 import inference_pb2 as pb

log = logging.getLogger("tandem.gateway")

ABORT_TIMEOUT_S = 5.0
"""Longest wait for a replica's answer to a forwarded Abort."""


@dataclass(eq=False)
class Flight:
    """A Generate call the gateway is running: where it went (for Abort) and whether it was aborted."""

    upstream_id: str
    replica: Replica | None = None
    aborted: bool = False
    abort_pending: bool = False
    """Aborted before the replica knew the request: forward the abort when its first chunk arrives."""
    probe: bool = False
    """The request is the probe of its replica's outlier ejection."""
    work: RequestWork | None = None
    """Its part of its replica's work (the load estimate), while it runs there."""
    resume: Resume = field(default_factory=lambda: Resume(pb.GenerateRequest()))
    """What reached the caller, to continue from on another replica (``gateway.resume``)."""
    cut: bool = False
    """The drain timeout ended it (``cut_streams``)."""

    @property
    def first_id(self) -> str:
        """The upstream id of its first attempt (continuations add ``~<attempt>``)."""
        return self.resume.original.request_id or self.upstream_id


class GatewayServicer(FrontDoorServicer):
    def __init__(self, router: Router, *, settings: GatewaySettings, limits: Limits, metrics: GatewayMetrics,
                 replica_metadata: tuple[tuple[str, str], ...] = (), quotas: Quotas | None = None,
                 log_prompts: bool = False, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.router = router
        self.membership: Membership = router.membership
        self.settings = settings
        self.metrics = metrics
        self.admission: Admission[Flight] = Admission(limits, quotas, server="gateway")
        self.access_log = AccessLog(log, metrics, log_prompts=log_prompts, clock=clock)
        self.replica_metadata = replica_metadata
        self._rng = rng or random.Random()
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def inflight(self) -> dict[CallKey, Flight]:
        """The Generate calls running or queued, by (tenant, request id)."""
        return self.admission.inflight

    @property
    def draining(self) -> bool:
        return self.admission.draining

    # -- Generate ----------------------------------------------------------------------------------------

    async def Generate(self, wire: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        record = CallRecord(wire.request_id, wire.tenant, wire.model, self._clock(), version=wire.model_version,
                            replica="", attempts=0)
        async for chunk in self.access_log.recorded(record, wire, context, self._generate(wire, context, record)):
            yield chunk

    async def _generate(self, wire: pb.GenerateRequest, context: grpc.aio.ServicerContext,
                        record: CallRecord) -> AsyncIterator[pb.GenerateChunk]:
        caller = await self.admission.check(wire, context)
        record.tenant = caller.name
        key = await self.admission.admit(caller, wire, context)
        upstream = pb.GenerateRequest()
        upstream.CopyFrom(wire)
        upstream.request_id, upstream.tenant = f"{caller.name}/{wire.request_id}", ""
        flight = Flight(upstream.request_id, resume=Resume(upstream))
        try:
            try:
                self.router.check_served(wire.model, wire.model_version)
            except NoReplicaError as exc:
                await refuse(context, grpc.StatusCode.NOT_FOUND, str(exc))
            self.inflight[key] = flight
            attempts = self._attempts(Plan(caller.name, wire), upstream, flight, record, context)
            try:
                async for chunk in attempts:
                    yield chunk
            finally:
                await attempts.aclose()
        finally:
            resume = flight.resume
            if record.completion_tokens < len(resume.ids):
                # the call ended before a final usage (cancelled, deadline, failure): charge what was generated
                record.use(record.prompt_tokens or prompt_tokens(upstream), len(resume.ids))
            self.admission.release(caller, key, record.tokens)

    async def _attempts(self, plan: Plan, upstream: pb.GenerateRequest, flight: Flight, record: CallRecord,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        tried: list[Replica] = []
        failure = "no attempt was made"
        code = grpc.StatusCode.UNAVAILABLE
        retry_after: str | None = None
        delay = False
        resume = flight.resume
        broken: str | None = None
        """Why the stream broke after tokens reached the caller (None while none did)."""
        for attempt in range(1, self.settings.max_attempts + 1):
            if delay:  # attempt 2 is the first retry
                await asyncio.sleep(retry_delay(attempt - 2, self._rng))
            if flight.cut:
                await self._refuse_cut(context, resume)
            if flight.aborted:
                yield pb.GenerateChunk(finish_reason=pb.FINISH_REASON_ABORT, usage=pb.Usage())
                return
            record.attempts = attempt
            try:
                replica = await self.router.acquire(plan, tried, give_up=lambda: flight.aborted)
            except QueueFullError as exc:
                if broken is not None:  # the caller has part of an answer: it continues elsewhere
                    failure, code = f"{broken}; no replica had room to continue ({exc})", grpc.StatusCode.UNAVAILABLE
                    break
                await refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; retry in {exc.retry_after_s:.1f} s",
                             ((RETRY_AFTER_METADATA, retry_after_ms(exc.retry_after_s)),))
            except NoReplicaError as exc:
                failure, code, delay = str(exc), grpc.StatusCode.UNAVAILABLE, True
                self.metrics.retries.labels("no_replica").inc()
                continue
            if replica is None:  # aborted (or cut) while queued
                if flight.cut:
                    await self._refuse_cut(context, resume)
                yield pb.GenerateChunk(finish_reason=pb.FINISH_REASON_ABORT, usage=pb.Usage())
                return
            tried.append(replica)
            upstream.model_version = plan.version or ""
            if broken is not None:  # the stream goes on here from what the caller has
                upstream = resume.request(f"{flight.first_id}~{attempt}")
                upstream.model_version = plan.version or ""
                flight.upstream_id = upstream.request_id
            self._take(replica, flight, upstream)
            call = replica.stub.Generate(upstream, timeout=context.time_remaining(), metadata=self.replica_metadata)
            try:
                try:
                    chunk = await call.read()
                except grpc.aio.AioRpcError as exc:
                    if broken is not None and retry_reason(exc.code()) is None:
                        failure, code = f"{broken}; replica {replica.address} refused to continue it: " \
                            f"{exc.code().name}: {exc.details()}", grpc.StatusCode.UNAVAILABLE
                        self._replica_failed(replica, exc)
                        break
                    delay = await self._failed_before_first_chunk(replica, exc, context,
                                                                  last_attempt=attempt == self.settings.max_attempts)
                    failure, code = f"replica {replica.address}: {exc.code().name}: {exc.details()}", exc.code()
                    retry_after = trailing_value(exc.trailing_metadata(), RETRY_AFTER_METADATA)
                    if broken is not None:
                        failure, code = f"{broken}; then {failure}", grpc.StatusCode.UNAVAILABLE
                    continue
                replica.ejection.record_success()
                if record.first_at is None:
                    record.first_at = self._clock()
                record.replica = replica.address
                if chunk is grpc.aio.EOF:
                    return
                if broken is None:
                    record.version = chunk.model_version or plan.version or record.version
                    plan.version = plan.version or chunk.model_version or None  # continuations stay on it
                else:
                    self.metrics.resumes.labels("resumed").inc()
                    broken = None
                last = chunk
                work = flight.work
                try:
                    while chunk is not grpc.aio.EOF:
                        if work is not None:
                            replica.work.received(work, len(chunk.token_ids), self._clock())
                        chunk = resume.trim(chunk)
                        last = chunk
                        if flight.abort_pending:
                            self._forward_abort(replica, flight)
                        if flight.cut and chunk.finish_reason == pb.FINISH_REASON_ABORT:
                            await self._refuse_cut(context, resume)
                        resume.add(chunk)
                        if last.HasField("usage") and resume.switches:
                            context.set_trailing_metadata(((RESUMED_METADATA, str(resume.switches)),))
                        yield chunk
                        chunk = await call.read()
                except grpc.aio.AioRpcError as exc:
                    draining = self._replica_failed(replica, exc)
                    broken = (f"replica {replica.address} failed after {len(resume.ids)} tokens "
                              f"({exc.code().name}: {exc.details()})")
                    failure, code, delay = broken, grpc.StatusCode.UNAVAILABLE, False
                    if retry_reason(exc.code(), draining=draining) is None:
                        break
                    self.metrics.retries.labels("mid_stream").inc()
                    continue
                if last.HasField("usage"):
                    record.use(last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.cached_tokens)
                return
            finally:
                call.cancel()  # no-op when it ended; frees the replica's slot when we are leaving early
                self._release(replica, flight)
        if resume.ids:  # the caller has part of an answer: it continues elsewhere from there
            self.metrics.resumes.labels("failed").inc()
            trailers = [(DELIVERED_METADATA, str(len(resume.ids)))]
            if resume.switches:
                trailers.append((RESUMED_METADATA, str(resume.switches)))
            last = "" if broken == failure else f" (last: {failure})"
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"{broken or failure}; no replica could continue the "
                         f"stream in {self.settings.max_attempts} attempt(s){last}: continue from the partial answer",
                         trailers)
        exhausted = code == grpc.StatusCode.RESOURCE_EXHAUSTED
        final = grpc.StatusCode.RESOURCE_EXHAUSTED if exhausted else grpc.StatusCode.UNAVAILABLE
        await refuse(context, final, f"no replica could take the request in {self.settings.max_attempts} attempt(s); "
                     f"last: {failure}", ((RETRY_AFTER_METADATA, retry_after),) if exhausted and retry_after else ())

    async def _refuse_cut(self, context: grpc.aio.ServicerContext, resume: Resume) -> NoReturn:
        """End a stream the drain timeout cut (``cut_streams``): UNAVAILABLE with the tokens delivered."""
        await refuse(context, grpc.StatusCode.UNAVAILABLE,
                     f"this gateway drained: the stream was cut after {len(resume.ids)} tokens at drain_timeout_s; "
                     "continue from the partial answer through another gateway",
                     ((DELIVERED_METADATA, str(len(resume.ids))), (DRAINING_METADATA, "1")))

    async def cut_streams(self) -> None:
        """End every call still running (the drain timed out): each ends UNAVAILABLE with
        ``tandem-delivered-tokens`` and ``tandem-draining``; the replicas are told to abort theirs."""
        for flight in list(self.inflight.values()):
            flight.cut = flight.aborted = True
            if flight.replica is not None:
                self._forward_abort(flight.replica, flight)
        self.router.queue.notify()

    async def _failed_before_first_chunk(self, replica: Replica, exc: grpc.aio.AioRpcError,
                                         context: grpc.aio.ServicerContext, *, last_attempt: bool) -> bool:
        """Answer the caller now when no other replica would do better; otherwise note why the request moves on
        and return whether to back off first (not after a draining replica's refusal)."""
        draining = self._replica_failed(replica, exc)
        code = exc.code()
        if code in GATEWAY_KEY_REFUSED:
            await refuse(context, grpc.StatusCode.INTERNAL, f"replica {replica.address} refused the gateway's key "
                         f"({exc.details()}): check gateway.replica_api_key and the replica's [[tenants]]")
        reason = retry_reason(code, draining=draining)
        if reason is None:  # the caller's mistake: every replica would say the same
            passed = trailing_value(exc.trailing_metadata(), RETRY_AFTER_METADATA)
            await refuse(context, code, exc.details() or code.name, ((RETRY_AFTER_METADATA, passed),) if passed else ())
        if not last_attempt:
            self.metrics.retries.labels(reason).inc()
        return not draining

    def _take(self, replica: Replica, flight: Flight, upstream: pb.GenerateRequest) -> None:
        flight.probe = replica.ejection.routed()
        replica.inflight += 1
        flight.work = RequestWork.of(upstream)
        replica.work.add(flight.work)
        flight.replica = replica
        self.metrics.inflight.labels(replica.address).inc()

    def _release(self, replica: Replica, flight: Flight) -> None:
        if flight.probe:
            replica.ejection.probe_finished()
            flight.probe = False
        replica.inflight -= 1
        if flight.work is not None:
            replica.work.remove(flight.work)
            flight.work = None
        flight.replica = None
        self.metrics.inflight.labels(replica.address).dec()
        self.router.queue.completed()

    def _replica_failed(self, replica: Replica, exc: grpc.aio.AioRpcError) -> bool:
        """Update what is known of a replica after a failed call; True when it said it is draining."""
        code = exc.code()
        draining = trailing_value(exc.trailing_metadata(), DRAINING_METADATA) is not None
        if draining:
            self.membership.mark_draining(replica, "answered draining")
        if code == grpc.StatusCode.NOT_FOUND:
            self._spawn(self.membership.refresh_models(replica))
        if is_replica_fault(code, draining=draining):
            if replica.ejection.record_failure():
                self.metrics.ejections.labels(replica.address, "outlier").inc()
                log.warning("replica ejected as an outlier", extra={"fields": {
                    "replica": replica.address, "failures": replica.ejection.failures,
                    "ejections": replica.ejection.ejections}})
            self.membership.suspect(replica)
        return draining

    def _forward_abort(self, replica: Replica, flight: Flight) -> None:
        flight.abort_pending = False
        self._spawn(replica.stub.Abort(pb.AbortRequest(request_id=flight.upstream_id), timeout=ABORT_TIMEOUT_S,
                                       metadata=self.replica_metadata))

    def cancel_background(self) -> None:
        """Cancel forwarded aborts and model refreshes still running (the server is stopping)."""
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, awaitable: Any) -> None:
        async def run() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await awaitable

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the other methods -------------------------------------------------------------------------------

    async def Abort(self, wire: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        caller = await self.admission.caller(wire.tenant, context)
        flight = self.inflight.get((caller.name, wire.request_id))
        if flight is None:
            return pb.AbortResponse(aborted=False)
        replica = flight.replica
        flight.aborted = True
        if replica is None:  # queued or between attempts: it ends without reaching a replica
            self.router.queue.notify()
            return pb.AbortResponse(aborted=True)
        try:
            response = await replica.stub.Abort(pb.AbortRequest(request_id=flight.upstream_id),
                                                timeout=ABORT_TIMEOUT_S, metadata=self.replica_metadata)
        except grpc.aio.AioRpcError as exc:
            await refuse(context, grpc.StatusCode.UNAVAILABLE,
                         f"replica {replica.address} did not take the abort: {exc.details()}; retry")
        if not response.aborted and flight.replica is replica:
            flight.abort_pending = True  # sent, not yet registered there: forwarded with its first chunk
        return pb.AbortResponse(aborted=True)

    async def GetLoad(self, wire: pb.GetLoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadReport:
        """The fleet's totals over the replicas that take work, plus this gateway's queue as waiting;
        kv_cache_usage is their mean. Each replica counts as its last report corrected by the gateway's own
        streams that started or ended since (``load.outstanding``), so a stream that ended shows at once."""
        replicas = [r for r in self.membership.available() if r.load is not None]
        loads = [r.load for r in replicas if r.load is not None]
        running = waiting = 0
        for replica, load in zip(replicas, loads, strict=True):
            now = int(outstanding(replica))
            running += min(now, max(load.max_running, 1))
            waiting += max(0, now - max(load.max_running, 1))
        return pb.LoadReport(
            running=running,
            waiting=waiting + len(self.router.queue),
            kv_cache_usage=sum(load.kv_cache_usage for load in loads) / len(loads) if loads else 0.0,
            max_running=sum(load.max_running for load in loads),
            draining=self.draining,
        )

    async def ListModels(self, wire: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        """Every model version some admitted or draining replica serves (each once)."""
        seen: dict[tuple[str, str], pb.ModelInfo] = {}
        for replica in self.membership.members():
            if replica.state in (ReplicaState.ADMITTED, ReplicaState.DRAINING):
                for info in replica.models:
                    seen.setdefault((info.name, info.version), info)
        return pb.ListModelsResponse(models=[seen[k] for k in sorted(seen)])
