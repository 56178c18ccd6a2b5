"""Per-tenant token buckets: requests per minute and tokens per minute.

Requests are charged one on admission. Tokens are charged after the stream ends, by what it used (prompt +
completion) however it ended: a stream cancelled, past its deadline or cut pays for the tokens generated
before it stopped, so cancelling early does not dodge the quota. The cost is unknown before; a tenant whose
token bucket is empty (it may go into debt by the last request's size) is refused until it refills. A refusal
carries the wait in seconds, which the server returns as ``retry-after-ms`` trailing metadata with
RESOURCE_EXHAUSTED.

Where several servers enforce one tenant's quota (N gateway pods behind one Service), each enforces a
``share`` of it (``set_share(1 / N)``, kept current by ``cloud_service.gateway.quota_peers``), so the
tenant's total stays what its config says rather than N times that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_service.front_door.config import TenantConfig

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

    def rescale(self, capacity: float) -> None:
        """A new capacity (and refill rate) from now on; the level keeps what was left, up to the new capacity."""
        self._refill()
        self.capacity = capacity
        self.level = min(self.level, capacity)


class Quotas:
    def __init__(self, clock: Clock = time.monotonic, share: float = 1.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket, TenantConfig]] = {}
        self._share = _checked_share(share)

    @property
    def share(self) -> float:
        """The fraction of every tenant's quota enforced here (1.0: all of it)."""
        return self._share

    def set_share(self, share: float) -> None:
        """Enforce ``share`` (0 < share <= 1) of every tenant's quota from now on (see the module docstring)."""
        share = _checked_share(share)
        with self._lock:
            if share == self._share:
                return
            self._share = share
            for requests, tokens, tenant in self._buckets.values():
                requests.rescale(_request_capacity(tenant, share))
                tokens.rescale(tenant.tokens_per_minute * share)

    def _of(self, tenant: TenantConfig) -> tuple[TokenBucket, TokenBucket, TenantConfig]:
        if tenant.name not in self._buckets:
            self._buckets[tenant.name] = (
                TokenBucket(_request_capacity(tenant, self._share), self._clock),
                TokenBucket(tenant.tokens_per_minute * self._share, self._clock),
                tenant,
            )
        return self._buckets[tenant.name]

    def admit(self, tenant: TenantConfig) -> float:
        """Charge one request and return 0, or return the seconds to wait (nothing charged)."""
        with self._lock:
            requests, tokens, _ = self._of(tenant)
            wait = max(requests.wait_for(1), tokens.wait_for(1e-9))
            if wait == 0:
                requests.take(1)
            return wait

    def charge_tokens(self, tenant: TenantConfig, amount: int) -> None:
        with self._lock:
            self._of(tenant)[1].take(amount)


def _checked_share(share: float) -> float:
    if not 0 < share <= 1:
        raise ValueError(f"a quota share must be in (0, 1], got {share!r}")
    return float(share)


def _request_capacity(tenant: TenantConfig, share: float) -> float:
    """At least one request: a bucket that cannot hold one would refuse the tenant forever."""
    return max(1.0, tenant.requests_per_minute * share)
