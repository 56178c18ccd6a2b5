"""The cloud link's state machine: hysteresis on consecutive results and an EWMA of the round-trip time.

    UNKNOWN --1 success---------------> UP        (nothing to protect yet)
    UNKNOWN --down_after failures-----> DOWN
    UP      --down_after failures-----> DOWN      (a single failed check does not flip routing)
    DOWN    --up_after successes------> UP        (nor does a single good one)

Any success resets the failure count and the reverse. ``rtt_ms`` is ``alpha * sample + (1 - alpha) *
previous`` over successful checks (the first sample seeds it) and keeps its last value while the link is
DOWN. Pure and thread-safe: the link monitor's thread and the request path both record into it.
"""

from __future__ import annotations

import math
import threading

from sdk.signals.errors import SignalError
from sdk.signals.types import NO_CLOUD_LINK, CloudLink, Link

DEFAULT_DOWN_AFTER_FAILURES = 2
DEFAULT_UP_AFTER_SUCCESSES = 3
DEFAULT_RTT_EWMA_ALPHA = 0.3
"""Weight of the newest round trip: about the last 1 / alpha ~ 3 checks dominate the smoothed value."""


def check_positive_int(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SignalError(field, f"must be an int >= 1, not {value!r}")


def check_alpha(value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise SignalError("rtt_alpha", f"must be a number in (0, 1], not {value!r}")


class LinkTracker:
    """Folds check results into a ``CloudLink`` snapshot (read ``snapshot``; it is replaced, never mutated)."""

    def __init__(self, *, down_after: int = DEFAULT_DOWN_AFTER_FAILURES, up_after: int = DEFAULT_UP_AFTER_SUCCESSES,
                 rtt_alpha: float = DEFAULT_RTT_EWMA_ALPHA) -> None:
        check_positive_int("down_after", down_after)
        check_positive_int("up_after", up_after)
        check_alpha(rtt_alpha)
        self.down_after = down_after
        self.up_after = up_after
        self.rtt_alpha = float(rtt_alpha)
        self._lock = threading.Lock()
        self._successes = 0
        self.snapshot: CloudLink = NO_CLOUD_LINK

    def record_success(self, rtt_ms: float | None = None) -> CloudLink:
        """Fold in a success (``rtt_ms`` None: a success without a round trip to count); the new snapshot."""
        if rtt_ms is not None and (not isinstance(rtt_ms, int | float) or isinstance(rtt_ms, bool)
                                   or not math.isfinite(rtt_ms) or rtt_ms < 0):
            raise SignalError("rtt_ms", f"must be a finite number >= 0 or None, not {rtt_ms!r}")
        with self._lock:
            old = self.snapshot
            self._successes += 1
            rtt = old.rtt_ms
            if rtt_ms is not None:
                rtt = float(rtt_ms) if rtt is None else self.rtt_alpha * rtt_ms + (1 - self.rtt_alpha) * rtt
            state = old.state
            if state is Link.UNKNOWN or (state is Link.DOWN and self._successes >= self.up_after):
                state = Link.UP
            self.snapshot = CloudLink(state, rtt, 0, None)
            return self.snapshot

    def record_failure(self, reason: str) -> CloudLink:
        """Fold in a failed check (``reason``: a gRPC status name, "NOT_SERVING", ...); the new snapshot."""
        with self._lock:
            old = self.snapshot
            self._successes = 0
            failures = old.consecutive_failures + 1
            state = Link.DOWN if failures >= self.down_after else old.state
            self.snapshot = CloudLink(state, old.rtt_ms, failures, reason)
            return self.snapshot
