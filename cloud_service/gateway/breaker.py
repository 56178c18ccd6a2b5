"""Per-replica circuit breaker: outlier detection on consecutive failures.

    closed ──(failure_threshold consecutive failures)──> open ──(cooldown passes)──> half-open
      ^                                                   ^                             │
      └────────────────── a success ──────────────────────┼──────── a failure ──────────┘

Open means ejected: the replica gets no new requests, whatever its health checks say (a replica can answer
health checks and still fail every request). After the cooldown it is half-open: one probe request at a time
goes to it (``routed`` marks it sent, ``probe_finished`` clears it when it ends without a verdict); the
first success closes the breaker and the first failure opens it for twice as long as before (up to
``MAX_COOLDOWN_FACTOR`` times the base), as Envoy's outlier detection does. So a replica that is still broken
costs one request per cooldown, not a burst of every request that arrived meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

MAX_COOLDOWN_FACTOR = 16
"""The longest ejection is this many base cooldowns."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failure_threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.failures = 0
        """Consecutive failures since the last success."""
        self.ejections = 0
        """Times opened since the last success (sets the next cooldown)."""
        self._opened_at: float | None = None
        self._probing = False
        """A half-open probe request is on its way (no other request may go until it succeeds or fails)."""

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self._cooldown():
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allows(self) -> bool:
        """True when the replica may take a new request (half-open: only while no probe is in flight)."""
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probing)

    def routed(self) -> bool:
        """A request was sent to the replica; True when it is the half-open probe."""
        if self.state is BreakerState.HALF_OPEN:
            self._probing = True
            return True
        return False

    def probe_finished(self) -> None:
        """The probe request ended (after its verdict was recorded, or cancelled without one)."""
        self._probing = False

    def record_success(self) -> None:
        self.failures, self.ejections, self._opened_at, self._probing = 0, 0, None, False

    def record_failure(self) -> bool:
        """Count a failure; True when this one opened the breaker (the replica is ejected now)."""
        self._probing = False
        self.failures += 1
        state = self.state
        if state is BreakerState.OPEN:
            return False
        if state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self.ejections += 1
            self._opened_at = self._clock()
            return True
        return False

    def _cooldown(self) -> float:
        return self.cooldown_s * min(MAX_COOLDOWN_FACTOR, 2 ** max(0, self.ejections - 1))
