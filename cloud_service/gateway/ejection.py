"""Per-replica outlier ejection on consecutive failed requests, with a doubling ejection time (as Envoy's outlier
detection does), and one probe request at a time when the ejection ends.

    in rotation ──(failure_threshold consecutive failures)──> ejected ──(ejection time passes)──> probing
         ^                                                       ^                                   │
         └──────────────────── a success ────────────────────────┼─────────── a failure ─────────────┘

Ejected, the replica gets no new requests, whatever its health checks say (a replica can answer health checks
and still fail every request). When the ejection time has passed it is probing: one request at a time goes to
it (``routed`` marks it sent, ``probe_finished`` clears it when it ends without a verdict); the first success
puts it back in rotation, the first failure ejects it again for twice as long as before (up to
``MAX_EJECTION_FACTOR`` times the base). So a replica that is still broken costs one request per ejection, not
a burst of every request that arrived meanwhile.

This is not the SDK's circuit breaker (``sdk.breaker``, one per side with a fixed reset): the gateway ejects one
replica of many and keeps the others in rotation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

MAX_EJECTION_FACTOR = 16
"""The longest ejection is this many base ejection times."""


class EjectionState(StrEnum):
    IN_ROTATION = "in_rotation"
    EJECTED = "ejected"
    PROBING = "probing"


class OutlierEjection:
    def __init__(self, failure_threshold: int, ejection_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """``failure_threshold`` consecutive failures eject for ``ejection_s`` (gateway.breaker_failures and
        gateway.breaker_cooldown_s)."""
        self.failure_threshold = failure_threshold
        self.ejection_s = ejection_s
        self._clock = clock
        self.failures = 0
        """Consecutive failures since the last success."""
        self.ejections = 0
        """Times ejected since the last success (sets the next ejection's length)."""
        self._ejected_at: float | None = None
        self._probing = False
        """A probe request is on its way (no other request may go until it succeeds or fails)."""

    @property
    def state(self) -> EjectionState:
        if self._ejected_at is None:
            return EjectionState.IN_ROTATION
        if self._clock() - self._ejected_at < self._ejection_time():
            return EjectionState.EJECTED
        return EjectionState.PROBING

    def allows(self) -> bool:
        """True when the replica may take a new request (probing: only while no probe is in flight)."""
        state = self.state
        return state is EjectionState.IN_ROTATION or (state is EjectionState.PROBING and not self._probing)

    def routed(self) -> bool:
        """A request was sent to the replica; True when it is the probe."""
        if self.state is EjectionState.PROBING:
            self._probing = True
            return True
        return False

    def probe_finished(self) -> None:
        """The probe request ended (after its verdict was recorded, or cancelled without one)."""
        self._probing = False

    def record_success(self) -> None:
        self.failures, self.ejections, self._ejected_at, self._probing = 0, 0, None, False

    def record_failure(self) -> bool:
        """Count a failure; True when this one ejected the replica."""
        self._probing = False
        self.failures += 1
        state = self.state
        if state is EjectionState.EJECTED:
            return False
        if state is EjectionState.PROBING or self.failures >= self.failure_threshold:
            self.ejections += 1
            self._ejected_at = self._clock()
            return True
        return False

    def _ejection_time(self) -> float:
        return self.ejection_s * min(MAX_EJECTION_FACTOR, 2 ** max(0, self.ejections - 1))


__all__ = ["MAX_EJECTION_FACTOR", "EjectionState", "OutlierEjection"]
