"""One access-log line and one metrics record per finished Generate call, the same for a replica and the
gateway.

A servicer fills a ``CallRecord`` as the call runs; ``AccessLog.recorded`` streams the call's chunks and, once
it ends (whatever way it ends), sets the record's final status and hands it to ``AccessLog.finish``: the log
line is a JSON object (``cloud_service.logs``) with the record's fields, the prompt only when ``log_prompts`` is
on, and the server's metrics take the record through ``record_call``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from cloud_service.front_door.admission import left_status, refused_status
from cloud_service.wire.v1 import inference_pb2 as pb


@dataclass
class CallRecord:
    """What the access log and the metrics say of one Generate call."""

    request_id: str
    """The id the caller gave the request."""
    tenant: str
    model: str
    started: float
    version: str = ""
    status: str = "OK"
    """The gRPC status name the call ended with (CANCELLED when the caller left)."""
    first_at: float | None = None
    """When the first token (replica) or chunk (gateway) was sent; None when none was."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    replica: str | None = None
    """The gateway's: the replica that served the call ("" when none was reached); None at a replica."""
    attempts: int | None = None
    """The gateway's: replicas tried."""

    def use(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        self.prompt_tokens, self.completion_tokens, self.cached_tokens = prompt_tokens, completion_tokens, cached_tokens

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens: what the tenant's token quota is charged."""
        return self.prompt_tokens + self.completion_tokens


class CallMetrics(Protocol):
    """A server's metrics as the access log feeds them."""

    def record_call(self, record: CallRecord, duration_s: float) -> None: ...


class AccessLog:
    def __init__(self, logger: logging.Logger, metrics: CallMetrics, *, log_prompts: bool = False,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.logger = logger
        self.metrics = metrics
        self.log_prompts = log_prompts
        self.clock = clock

    async def recorded(self, record: CallRecord, wire: pb.GenerateRequest, context: grpc.aio.ServicerContext,
                       calls: AsyncIterator[pb.GenerateChunk]) -> AsyncIterator[pb.GenerateChunk]:
        """``calls``'s chunks; when it ends, the record takes the call's final status (a refusal's, or
        CANCELLED / DEADLINE_EXCEEDED when the caller left) and is finished."""
        try:
            async for chunk in calls:
                yield chunk
        except grpc.aio.AbortError:
            record.status = refused_status(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            record.status = left_status(context)
            raise
        finally:
            await calls.aclose()  # type: ignore[attr-defined]
            self.finish(record, wire)

    def finish(self, record: CallRecord, wire: pb.GenerateRequest) -> None:
        """The call ended: record its metrics and write its log line."""
        ended = self.clock()
        self.metrics.record_call(record, ended - record.started)
        fields: dict[str, Any] = {
            "event": "generate", "request_id": record.request_id, "tenant": record.tenant, "model": record.model,
            "version": record.version, "status": record.status, "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens, "cached_tokens": record.cached_tokens,
            "ttft_ms": _ms(record.first_at - record.started) if record.first_at is not None else None,
            "duration_ms": _ms(ended - record.started),
        }
        if record.replica is not None:
            fields["replica"] = record.replica
        if record.attempts is not None:
            fields["attempts"] = record.attempts
        if self.log_prompts:
            fields["prompt"] = (wire.prompt if wire.WhichOneof("input") == "prompt"
                                else [m.content for m in wire.chat.messages])
        self.logger.info("generate %s", record.status, extra={"fields": fields})


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


__all__ = ["AccessLog", "CallMetrics", "CallRecord"]
