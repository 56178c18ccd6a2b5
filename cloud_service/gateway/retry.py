"""When a failed attempt goes to another replica, and how long to wait first.

Only failures before the first chunk are retried (after it the client has text; the gateway ends the stream
with UNAVAILABLE and ``tandem-delivered-tokens`` so the SDK continues elsewhere). ``retry_reason`` is the one
predicate: it names why a status may be retried, or returns None for the statuses another replica would
answer the same way (the caller's own mistakes). A draining replica's refusal is retried at once; the
others wait ``retry_delay``: ``cloud_service.backoff`` with half the step drawn at random.
"""

from __future__ import annotations

import random

import grpc

from cloud_service.backoff import backoff_delay

INITIAL_RETRY_DELAY_S = 0.01
MAX_RETRY_DELAY_S = 0.25
RETRY_JITTER = 0.5
"""The delay is drawn from [1 - RETRY_JITTER, 1] x the exponential step."""

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "replica_busy",
    grpc.StatusCode.INTERNAL: "replica_error",
    grpc.StatusCode.UNKNOWN: "replica_error",
    grpc.StatusCode.CANCELLED: "replica_cancelled",
    grpc.StatusCode.NOT_FOUND: "stale_models",
}
_REPLICA_FAULTS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                   grpc.StatusCode.CANCELLED}
GATEWAY_KEY_REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
"""A replica refusing the gateway's own key: the gateway's configuration is wrong, not the caller's request."""


def retry_reason(code: grpc.StatusCode, *, draining: bool = False) -> str | None:
    """Why a request that failed with ``code`` before its first chunk may try another replica; None: it may not."""
    if draining:
        return "draining"
    return _RETRYABLE.get(code)


def is_replica_fault(code: grpc.StatusCode, *, draining: bool = False) -> bool:
    """Does this failure count against the replica (its outlier ejection)? Draining and busy replicas are
    healthy; the caller's mistakes are not the replica's."""
    return not draining and code in _REPLICA_FAULTS


def retry_delay(retry: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (0 = the first retry: the request's second attempt)."""
    return backoff_delay(retry, base_s=INITIAL_RETRY_DELAY_S, cap_s=MAX_RETRY_DELAY_S, jitter=RETRY_JITTER, rng=rng)
