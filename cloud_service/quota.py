"""Per-tenant token buckets: requests per minute and tokens per minute.

Requests are charged one on admission. Tokens are charged after the stream ends, by its real usage
(prompt + completion), because the cost is unknown before; a tenant whose token bucket is empty (it may go
into debt by the last request's size) is refused until it refills. A refusal carries the wait in seconds,
which the server returns as ``retry-after-ms`` trailing metadata with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_service.config import TenantConfig

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``capacity`` per minute."""

    capacity: float
    clock: Clock = time.monotonic
    level: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.level, self.updated = self.capacity, self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` could be taken (0 if now)."""
        self._refill()
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.capacity

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount


class Quotas:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}

    def _of(self, tenant: TenantConfig) -> tuple[TokenBucket, TokenBucket]:
        if tenant.name not in self._buckets:
            self._buckets[tenant.name] = (
                TokenBucket(tenant.requests_per_minute, self._clock),
                TokenBucket(tenant.tokens_per_minute, self._clock),
            )
        return self._buckets[tenant.name]

    def admit(self, tenant: TenantConfig) -> float:
        """Charge one request and return 0, or return the seconds to wait (nothing charged)."""
        with self._lock:
            requests, tokens = self._of(tenant)
            wait = max(requests.wait_for(1), tokens.wait_for(1e-9))
            if wait == 0:
                requests.take(1)
            return wait

    def charge_tokens(self, tenant: TenantConfig, amount: int) -> None:
        with self._lock:
            self._of(tenant)[1].take(amount)
