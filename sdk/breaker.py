"""A circuit breaker per side, so a dead cloud (or a broken device model) is not hammered.

closed --(``failures`` in a row)--> open --(``reset_s`` passed)--> half-open: one trial request
half-open --success--> closed;   half-open --failure--> open again (for another ``reset_s``)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def blocks(self) -> bool:
        """True when a request should not go to this side now (read-only; for the routing decision)."""
        state = self.state
        return state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_out)

    def allow(self) -> bool:
        """Take a slot: always when closed; once (the trial) when half-open; never when open."""
        with self._lock:
            state = self.state
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._trial_out:
                self._trial_out = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._consecutive, self._opened_at, self._trial_out = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._opened_at is not None or self._consecutive >= self.failures:
                self._opened_at, self._trial_out = self._clock(), False
