"""The Inference service of a replica: requests checked, admitted and streamed from an Engine.

Order of checks for Generate: the front door's (``front_door.admission``: draining -> tenant and model
permission -> request size and id) -> model and version (NOT_FOUND) -> request fields (INVALID_ARGUMENT,
naming the field) -> the front door's admission (duplicate id, quota with ``retry-after-ms``) -> prompt length
(INVALID_ARGUMENT). The engine's errors map to statuses at this boundary; a failure after tokens were sent also
reports ``tandem-delivered-tokens`` so the caller can continue elsewhere, as does a stream the drain timeout
cuts (``cut_streams``: UNAVAILABLE). A client that cancels or whose deadline passes cancels this handler, which
closes the engine stream, which frees the engine's slot.

Every call is counted by its final status (refusals too; a deadline as DEADLINE_EXCEEDED) and charged to its
tenant's token quota for every token the engine produced, however the call ended: the engine's final usage,
or (cancelled, deadline, cut) the prompt's length plus the tokens generated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from cloud_service.convert import chunk_from_events, request_from_wire
from cloud_service.errors import DELIVERED_METADATA, DRAINING_METADATA
from cloud_service.front_door.access_log import AccessLog, CallRecord
from cloud_service.front_door.admission import Admission, CallKey, refuse
from cloud_service.front_door.config import Limits
from cloud_service.front_door.listener import FrontDoorServicer
from cloud_service.metrics import ServerMetrics
from cloud_service.quota import Quotas
from cloud_service.wire.v1 import inference_pb2 as pb
from edge_runtime.engine import Engine
from edge_runtime.errors import (
    EdgeRuntimeError,
    EngineBusyError,
    EngineClosedError,
    InvalidRequestError,
)
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage

log = logging.getLogger("tandem.replica")

CHUNK_INTERVAL_S = 0.025
"""Tokens that follow each other within this share one GenerateChunk: 40 chunks a second at most per stream,
smooth to a reader, while each chunk costs the same CPU whatever it carries."""
CHUNK_RATE_BUDGET = 400.0
"""GenerateChunks per second that all of a replica's streams together send before chunks grow: each stream
sends at most every ``max(CHUNK_INTERVAL_S, streams in flight / CHUNK_RATE_BUDGET)`` seconds (25 ms up to 10
streams, 40 ms at 16, 80 ms at 32). Each chunk costs CPU in grpc.aio on both ends whatever it carries, CPU the
engine shares on a small machine; this bounds that cost as streams multiply (BENCHMARKS.md, Cloud replica)."""


def chunk_interval(streams: int) -> float:
    """Shortest time between two chunks of one stream while ``streams`` are in flight (see CHUNK_RATE_BUDGET)."""
    return max(CHUNK_INTERVAL_S, streams / CHUNK_RATE_BUDGET)


TEMPLATE_TOKEN_ALLOWANCE = 64
"""Upper bound on the tokens a chat template adds per message, for the cheap prompt-length pre-check."""


class ServedEngine(Engine, Protocol):
    """What a replica needs from an engine beyond the Engine protocol: load figures and prompt length."""

    @property
    def running(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    @property
    def cache_usage(self) -> float: ...

    @property
    def max_running(self) -> int: ...

    def prompt_tokens(self, request: GenerationRequest) -> int: ...


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    engine: ServedEngine


def _status_of(exc: EdgeRuntimeError) -> grpc.StatusCode:
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, EngineBusyError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, EngineClosedError):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _byte_bound(request: GenerationRequest) -> int:
    """An upper bound on the prompt's tokens without tokenizing: a token is at least one UTF-8 byte."""
    texts = [m.content for m in request.messages or ()] + [request.prompt or "", request.assistant_prefix]
    return sum(len(t.encode("utf-8")) for t in texts) + TEMPLATE_TOKEN_ALLOWANCE * (len(request.messages or ()) + 1)


class InferenceServicer(FrontDoorServicer):
    def __init__(
        self,
        models: Sequence[ServedModel],
        *,
        limits: Limits,
        metrics: ServerMetrics,
        quotas: Quotas | None = None,
        log_prompts: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.models: dict[str, list[ServedModel]] = {}
        for model in models:
            self.models.setdefault(model.name, []).append(model)
        self.limits = limits
        self.metrics = metrics
        self.admission: Admission[ServedModel] = Admission(limits, quotas, server="replica")
        self.access_log = AccessLog(log, metrics, log_prompts=log_prompts, clock=clock)
        self._clock = clock
        self.cut: set[CallKey] = set()
        """Calls whose stream the drain timeout is ending (``cut_streams``)."""

    @property
    def inflight(self) -> dict[CallKey, ServedModel]:
        """The Generate calls running, by (tenant, request id)."""
        return self.admission.inflight

    @property
    def draining(self) -> bool:
        return self.admission.draining

    # -- Generate ----------------------------------------------------------------------------------------

    def chunk_interval(self) -> float:
        """Shortest time between two chunks of one stream at the current load."""
        return chunk_interval(len(self.inflight))

    def _resolve(self, name: str, version: str) -> ServedModel | None:
        versions = self.models.get(name, [])
        if not version:
            return versions[0] if versions else None
        return next((m for m in versions if m.version == version), None)

    async def Generate(
        self, wire: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateChunk]:
        record = CallRecord(wire.request_id, wire.tenant, wire.model, self._clock(), version=wire.model_version)
        async for chunk in self.access_log.recorded(record, wire, context, self._generate(wire, context, record)):
            yield chunk

    async def _generate(self, wire: pb.GenerateRequest, context: grpc.aio.ServicerContext,
                        record: CallRecord) -> AsyncIterator[pb.GenerateChunk]:
        caller = await self.admission.check(wire, context)
        record.tenant = caller.name
        model = self._resolve(wire.model, wire.model_version)
        if model is None:
            known = ", ".join(f"{m.name}@{m.version}" for v in self.models.values() for m in v)
            await refuse(context, grpc.StatusCode.NOT_FOUND,
                         f"model {wire.model!r} version {wire.model_version!r} is not served here ({known})")
        record.version = model.version
        try:
            request = request_from_wire(wire, engine_request_id=f"{caller.name}/{wire.request_id}",
                                        max_tokens_limit=self.limits.max_tokens)
        except InvalidRequestError as exc:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        key = await self.admission.admit(caller, wire, context)
        try:
            await self._check_prompt_length(request, model, context)
        except BaseException:
            self.admission.release(caller, key, 0)
            raise

        started = record.started
        self.inflight[key] = model
        stream = model.engine.generate(request)
        delivered, usage = 0, None
        last_at = sent_at = started
        pending: list[TokenEvent] = []
        interval = self.chunk_interval()
        inter_token = self.metrics.inter_token.labels(model.name)
        try:
            async for event in stream:
                now = self._clock()
                if record.first_at is None:
                    record.first_at = now
                    self.metrics.ttft.labels(model.name).observe(now - started)
                else:
                    inter_token.observe(now - last_at)
                last_at = now
                delivered += 1 if event.token_id is not None else 0
                usage = event.usage or usage
                if event.finish_reason is FinishReason.ABORT and key in self.cut:
                    break
                pending.append(event)
                # tokens that arrive within the interval share a chunk; the first and last go at once
                if delivered <= 1 or event.finish_reason is not None or now - sent_at >= interval:
                    yield self._chunk(pending, model, first=sent_at == started)
                    pending, sent_at, interval = [], now, self.chunk_interval()
            if pending:
                yield self._chunk(pending, model, first=sent_at == started)
            if key in self.cut:  # the drain timed out: the caller continues elsewhere from what it has
                await refuse(context, grpc.StatusCode.UNAVAILABLE,
                             f"this replica drained: the stream was cut after {delivered} tokens at "
                             "drain_timeout_s; continue from the partial answer on another replica",
                             ((DELIVERED_METADATA, str(delivered)), (DRAINING_METADATA, "1")))
        except EdgeRuntimeError as exc:
            code = _status_of(exc)
            if pending:  # what was generated before the failure still reaches the caller
                yield self._chunk(pending, model, first=sent_at == started)
            await refuse(context, code, str(exc), ((DELIVERED_METADATA, str(delivered)),) if delivered else ())
        finally:
            self.cut.discard(key)
            await stream.aclose()  # type: ignore[attr-defined]
            if usage is None or usage.completion_tokens < delivered:
                # the call ended before the engine's final count (cancelled, deadline, cut): charge what it made
                usage = Usage(await self._prompt_tokens(model, request), delivered)
            record.use(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
            self.admission.release(caller, key, record.tokens)

    @staticmethod
    def _chunk(events: list[TokenEvent], model: ServedModel, *, first: bool) -> pb.GenerateChunk:
        """One chunk of ``events``; the stream's first also names the version and the vocabulary."""
        return chunk_from_events(events, model.version if first else "", model.engine.info.vocabulary if first else "")

    async def cut_streams(self) -> None:
        """End every stream still running (the drain timed out): the engine aborts each, and its stream ends
        UNAVAILABLE with ``tandem-delivered-tokens`` and ``tandem-draining``, so any client can continue it."""
        for (tenant, request_id), model in list(self.inflight.items()):
            self.cut.add((tenant, request_id))
            await model.engine.abort(f"{tenant}/{request_id}")

    async def _prompt_tokens(self, model: ServedModel, request: GenerationRequest) -> int:
        """The prompt's length for a call that ended without the engine's count (0 if it cannot be had)."""
        try:
            return await asyncio.to_thread(model.engine.prompt_tokens, request)
        except (EdgeRuntimeError, asyncio.CancelledError):
            return 0

    async def _check_prompt_length(self, request: GenerationRequest, model: ServedModel,
                                   context: grpc.aio.ServicerContext) -> None:
        limit = self.limits.max_prompt_tokens
        if _byte_bound(request) <= limit:
            return
        try:
            count = await asyncio.to_thread(model.engine.prompt_tokens, request)
        except EdgeRuntimeError as exc:
            await refuse(context, _status_of(exc), str(exc))
        if count > limit:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"the prompt is {count} tokens; this server accepts at most {limit} "
                         "(limits.max_prompt_tokens)")

    # -- the other methods -------------------------------------------------------------------------------

    async def Abort(self, wire: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        caller = await self.admission.caller(wire.tenant, context)
        model = self.inflight.get((caller.name, wire.request_id))
        aborted = model is not None and await model.engine.abort(f"{caller.name}/{wire.request_id}")
        return pb.AbortResponse(aborted=aborted)

    async def GetLoad(self, wire: pb.GetLoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadReport:
        engines = [m.engine for versions in self.models.values() for m in versions]
        return pb.LoadReport(
            running=sum(e.running for e in engines),
            waiting=sum(e.waiting for e in engines),
            kv_cache_usage=max((e.cache_usage for e in engines), default=0.0),
            max_running=sum(e.max_running for e in engines),
            draining=self.draining,
        )

    async def ListModels(self, wire: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[
            pb.ModelInfo(name=m.name, version=m.version, max_context=m.engine.info.context_length,
                         engine=m.engine.info.backend, vocabulary=m.engine.info.vocabulary)
            for versions in self.models.values() for m in versions
        ])
