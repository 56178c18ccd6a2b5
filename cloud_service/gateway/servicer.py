"""The gateway's Inference service: the replica's API in front of many replicas.

Generate checks the caller like a replica does (draining -> tenant and model permission -> request size ->
duplicate id -> quota), then tries up to ``max_attempts`` replicas:

- before the first chunk, a failure another replica could avoid (``retry.retry_reason``) moves the request
  to another replica after a backoff with jitter; the caller's own mistakes are answered as the replica
  answered them;
- after the first chunk, chunks are forwarded as they come (per chunk, only the replica's work count of the
  load estimate is updated: ``work``); a failure ends the stream with UNAVAILABLE and
  ``tandem-delivered-tokens`` = tokens delivered, so the SDK continues elsewhere;
- the caller cancelling, or its deadline passing, cancels the upstream call (the replica frees the slot).

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
from dataclasses import dataclass
from typing import Any

import grpc

from cloud_service.auth import current_tenant
from cloud_service.config import Limits
from cloud_service.errors import DELIVERED_METADATA, DRAINING_METADATA, RETRY_AFTER_METADATA
from cloud_service.gateway.admission import QueueFullError
from cloud_service.gateway.config import GatewaySettings
from cloud_service.gateway.membership import Membership, Replica, ReplicaState
from cloud_service.gateway.metrics import GatewayMetrics
from cloud_service.gateway.retry import GATEWAY_KEY_REFUSED, backoff_delay, is_replica_fault, retry_reason
from cloud_service.gateway.routing import NoReplicaError, Plan, Router
from cloud_service.gateway.work import RequestWork
from cloud_service.quota import Quotas
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc

log = logging.getLogger("tandem.gateway")

ABORT_TIMEOUT_S = 5.0
"""Longest wait for a replica's answer to a forwarded Abort."""


def _metadata(metadata: Any, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


@dataclass(eq=False)
class Flight:
    """A Generate call the gateway is running: where it went (for Abort) and whether it was aborted."""

    upstream_id: str
    replica: Replica | None = None
    aborted: bool = False
    abort_pending: bool = False
    """Aborted before the replica knew the request: forward the abort when its first chunk arrives."""
    probe: bool = False
    """The request is the half-open probe of its replica's circuit breaker."""
    work: RequestWork | None = None
    """Its part of its replica's work (the load estimate), while it runs there."""


@dataclass
class Outcome:
    """What the access log and metrics say of one call."""

    status: str = "OK"
    replica: str = ""
    version: str = ""
    first_at: float | None = None
    usage: pb.Usage | None = None
    attempts: int = 0


class GatewayServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, router: Router, *, settings: GatewaySettings, limits: Limits, metrics: GatewayMetrics,
                 replica_metadata: tuple[tuple[str, str], ...] = (), quotas: Quotas | None = None,
                 log_prompts: bool = False, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.router = router
        self.membership: Membership = router.membership
        self.settings = settings
        self.limits = limits
        self.metrics = metrics
        self.quotas = quotas or Quotas()
        self.log_prompts = log_prompts
        self.replica_metadata = replica_metadata
        self.draining = False
        self.inflight: dict[tuple[str, str], Flight] = {}
        self._rng = rng or random.Random()
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- Generate ----------------------------------------------------------------------------------------

    async def Generate(self, wire: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        started = self._clock()
        if self.draining:
            context.set_trailing_metadata(((DRAINING_METADATA, "1"),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this gateway is draining; retry on another")
        tenant = current_tenant.get()
        tenant_name = tenant.name if tenant else wire.tenant
        if tenant is not None:
            if wire.tenant and wire.tenant != tenant.name:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"this API key belongs to tenant {tenant.name!r}, not {wire.tenant!r}")
            if not tenant.may_use(wire.model):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"tenant {tenant.name!r} may not use model {wire.model!r}")
        if wire.ByteSize() > self.limits.max_message_bytes:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is {wire.ByteSize()} bytes; this "
                                f"gateway accepts at most {self.limits.max_message_bytes} (limits.max_message_bytes)")
        if not wire.request_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "request_id is empty; give each request an id (Abort takes it)")
        key = (tenant_name, wire.request_id)
        if key in self.inflight:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"request_id {wire.request_id!r} is already running for this tenant")
        if tenant is not None:
            wait = self.quotas.admit(tenant)
            if wait > 0:
                context.set_trailing_metadata(((RETRY_AFTER_METADATA, str(int(wait * 1000) + 1)),))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"tenant {tenant.name!r} is over its quota; retry in {wait:.1f} s")
        try:
            self.router.check_served(wire.model, wire.model_version)
        except NoReplicaError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

        upstream = pb.GenerateRequest()
        upstream.CopyFrom(wire)
        upstream.request_id, upstream.tenant = f"{tenant_name}/{wire.request_id}", ""
        flight = Flight(upstream.request_id)
        outcome = Outcome()
        self.inflight[key] = flight
        attempts = self._attempts(Plan(tenant_name, wire), upstream, flight, outcome, context)
        try:
            async for chunk in attempts:
                yield chunk
        except asyncio.CancelledError:
            outcome.status = "CANCELLED"
            raise
        finally:
            await attempts.aclose()
            del self.inflight[key]
            usage = outcome.usage
            if tenant is not None and usage is not None:
                self.quotas.charge_tokens(tenant, usage.prompt_tokens + usage.completion_tokens)
            self._record(wire, tenant_name, outcome, started)

    async def _attempts(self, plan: Plan, upstream: pb.GenerateRequest, flight: Flight, outcome: Outcome,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateChunk]:
        tried: list[Replica] = []
        failure = "no attempt was made"
        code = grpc.StatusCode.UNAVAILABLE
        retry_after: str | None = None
        delay = False
        for attempt in range(1, self.settings.max_attempts + 1):
            if delay:
                await asyncio.sleep(backoff_delay(attempt - 1, self._rng))
            if flight.aborted:
                yield pb.GenerateChunk(finish_reason=pb.FINISH_REASON_ABORT, usage=pb.Usage())
                return
            outcome.attempts = attempt
            try:
                replica = await self.router.acquire(plan, tried, give_up=lambda: flight.aborted)
            except QueueFullError as exc:
                outcome.status = "RESOURCE_EXHAUSTED"
                context.set_trailing_metadata(((RETRY_AFTER_METADATA, str(int(exc.retry_after_s * 1000) + 1)),))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; retry in {exc.retry_after_s:.1f} s")
                return
            except NoReplicaError as exc:
                failure, code, delay = str(exc), grpc.StatusCode.UNAVAILABLE, True
                self.metrics.retries.labels("no_replica").inc()
                continue
            if replica is None:  # aborted while queued
                yield pb.GenerateChunk(finish_reason=pb.FINISH_REASON_ABORT, usage=pb.Usage())
                return
            tried.append(replica)
            upstream.model_version = plan.version or ""
            self._take(replica, flight, upstream)
            call = replica.stub.Generate(upstream, timeout=context.time_remaining(), metadata=self.replica_metadata)
            delivered = 0
            try:
                try:
                    chunk = await call.read()
                except grpc.aio.AioRpcError as exc:
                    delay = await self._failed_before_first_chunk(replica, exc, outcome, context,
                                                                  last_attempt=attempt == self.settings.max_attempts)
                    failure, code = f"replica {replica.address}: {exc.code().name}: {exc.details()}", exc.code()
                    retry_after = _metadata(exc.trailing_metadata(), RETRY_AFTER_METADATA)
                    continue
                replica.breaker.record_success()
                outcome.first_at, outcome.replica = self._clock(), replica.address
                if chunk is grpc.aio.EOF:
                    return
                outcome.version = chunk.model_version or plan.version or ""
                last = chunk
                work = flight.work
                try:
                    while chunk is not grpc.aio.EOF:
                        tokens = len(chunk.token_ids)
                        delivered += tokens
                        if work is not None:
                            replica.work.received(work, tokens)
                        last = chunk
                        if flight.abort_pending:
                            self._forward_abort(replica, flight)
                        yield chunk
                        chunk = await call.read()
                except grpc.aio.AioRpcError as exc:
                    self._replica_failed(replica, exc)
                    outcome.status = "UNAVAILABLE"
                    context.set_trailing_metadata(((DELIVERED_METADATA, str(delivered)),))
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        f"replica {replica.address} failed after {delivered} tokens "
                                        f"({exc.code().name}: {exc.details()}); continue from the partial answer")
                if last.HasField("usage"):
                    outcome.usage = last.usage
                return
            finally:
                call.cancel()  # no-op when it ended; frees the replica's slot when we are leaving early
                self._release(replica, flight)
        outcome.status = code.name if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "UNAVAILABLE"
        if retry_after and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            context.set_trailing_metadata(((RETRY_AFTER_METADATA, retry_after),))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED if code == grpc.StatusCode.RESOURCE_EXHAUSTED
                            else grpc.StatusCode.UNAVAILABLE,
                            f"no replica could take the request in {self.settings.max_attempts} attempt(s); "
                            f"last: {failure}")

    async def _failed_before_first_chunk(self, replica: Replica, exc: grpc.aio.AioRpcError, outcome: Outcome,
                                         context: grpc.aio.ServicerContext, *, last_attempt: bool) -> bool:
        """Answer the caller now when no other replica would do better; otherwise note why the request moves on
        and return whether to back off first (not after a draining replica's refusal)."""
        draining = self._replica_failed(replica, exc)
        code = exc.code()
        if code in GATEWAY_KEY_REFUSED:
            outcome.status = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, f"replica {replica.address} refused the gateway's key "
                                f"({exc.details()}): check gateway.replica_api_key and the replica's [[tenants]]")
        reason = retry_reason(code, draining=draining)
        if reason is None:  # the caller's mistake: every replica would say the same
            outcome.status = code.name
            passed = _metadata(exc.trailing_metadata(), RETRY_AFTER_METADATA)
            if passed:
                context.set_trailing_metadata(((RETRY_AFTER_METADATA, passed),))
            await context.abort(code, exc.details() or code.name)
        if not last_attempt:
            self.metrics.retries.labels(reason).inc()
        return not draining

    def _take(self, replica: Replica, flight: Flight, upstream: pb.GenerateRequest) -> None:
        flight.probe = replica.breaker.routed()
        replica.inflight += 1
        flight.work = RequestWork.of(upstream)
        replica.work.add(flight.work)
        flight.replica = replica
        self.metrics.inflight.labels(replica.address).inc()

    def _release(self, replica: Replica, flight: Flight) -> None:
        if flight.probe:
            replica.breaker.probe_finished()
            flight.probe = False
        replica.inflight -= 1
        if flight.work is not None:
            replica.work.remove(flight.work)
            flight.work = None
        flight.replica = None
        self.metrics.inflight.labels(replica.address).dec()
        self.router.admission.completed()

    def _replica_failed(self, replica: Replica, exc: grpc.aio.AioRpcError) -> bool:
        """Update what is known of a replica after a failed call; True when it said it is draining."""
        code = exc.code()
        draining = _metadata(exc.trailing_metadata(), DRAINING_METADATA) is not None
        if draining:
            self.membership.mark_draining(replica, "answered draining")
        if code == grpc.StatusCode.NOT_FOUND:
            self._spawn(self.membership.refresh_models(replica))
        if is_replica_fault(code, draining=draining):
            if replica.breaker.record_failure():
                self.metrics.ejections.labels(replica.address, "outlier").inc()
                log.warning("replica ejected by its circuit breaker", extra={"fields": {
                    "replica": replica.address, "failures": replica.breaker.failures,
                    "ejections": replica.breaker.ejections}})
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

    def _record(self, wire: pb.GenerateRequest, tenant: str, outcome: Outcome, started: float) -> None:
        ended = self._clock()
        version = outcome.version or wire.model_version
        self.metrics.requests.labels(wire.model, version, outcome.replica, outcome.status).inc()
        if outcome.first_at is not None:
            self.metrics.ttft.labels(wire.model, version).observe(outcome.first_at - started)
        self.metrics.e2e.labels(wire.model, version).observe(ended - started)
        usage = outcome.usage
        fields: dict[str, Any] = {
            "event": "generate", "request_id": wire.request_id, "tenant": tenant, "model": wire.model,
            "version": version, "replica": outcome.replica, "status": outcome.status, "attempts": outcome.attempts,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "cached_tokens": usage.cached_tokens if usage else 0,
            "ttft_ms": round((outcome.first_at - started) * 1000, 2) if outcome.first_at is not None else None,
            "duration_ms": round((ended - started) * 1000, 2),
        }
        if self.log_prompts:
            fields["prompt"] = (wire.prompt if wire.WhichOneof("input") == "prompt"
                                else [m.content for m in wire.chat.messages])
        log.info("generate %s", outcome.status, extra={"fields": fields})

    # -- the other methods -------------------------------------------------------------------------------

    async def Abort(self, wire: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        tenant = current_tenant.get()
        if tenant is not None and wire.tenant and wire.tenant != tenant.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"this API key belongs to tenant {tenant.name!r}, not {wire.tenant!r}")
        flight = self.inflight.get((tenant.name if tenant else wire.tenant, wire.request_id))
        if flight is None:
            return pb.AbortResponse(aborted=False)
        replica = flight.replica
        flight.aborted = True
        if replica is None:  # queued or between attempts: it ends without reaching a replica
            self.router.admission.notify()
            return pb.AbortResponse(aborted=True)
        try:
            response = await replica.stub.Abort(pb.AbortRequest(request_id=flight.upstream_id),
                                                timeout=ABORT_TIMEOUT_S, metadata=self.replica_metadata)
        except grpc.aio.AioRpcError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"replica {replica.address} did not take the abort: {exc.details()}; retry")
        if not response.aborted and flight.replica is replica:
            flight.abort_pending = True  # sent, not yet registered there: forwarded with its first chunk
        return pb.AbortResponse(aborted=True)

    async def GetLoad(self, wire: pb.GetLoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadReport:
        """The fleet's totals over the replicas that take work, plus this gateway's queue as waiting;
        kv_cache_usage is their mean."""
        replicas = self.membership.available()
        loads = [r.load for r in replicas if r.load is not None]
        return pb.LoadReport(
            running=sum(load.running for load in loads),
            waiting=sum(load.waiting for load in loads) + len(self.router.admission),
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
