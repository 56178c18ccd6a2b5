"""When a failed attempt goes to another replica, and how long to wait first.

Only failures before the first chunk are retried (after it the client has text; the gateway ends the stream
with UNAVAILABLE and ``tandem-delivered-tokens`` so the SDK continues elsewhere). ``retry_reason`` is the one
predicate: it names why a status may be retried, or returns None for the statuses another replica would
answer the same way (the caller's own mistakes). A draining replica's refusal is retried at once; the
others wait an exponential backoff with jitter.
"""

from __future__ import annotations

import random

import grpc

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
    """Does this failure count against the replica (its circuit breaker)? Draining and busy replicas are
    healthy; the caller's mistakes are not the replica's."""
    return not draining and code in _REPLICA_FAULTS


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt`` (1 = the first retry)."""
    step = min(MAX_RETRY_DELAY_S, INITIAL_RETRY_DELAY_S * 2 ** (attempt - 1))
    return step * (1 - RETRY_JITTER * (rng or random).random())
