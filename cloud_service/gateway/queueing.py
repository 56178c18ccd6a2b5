"""The gateway's admission queue (load shedding): when every replica that could take a request is saturated,
the request waits here (first come, first served) for one to have room, up to ``max_queue`` waiting and
``queue_timeout_s`` each; beyond either it is refused with RESOURCE_EXHAUSTED and a ``retry-after-ms``
estimated from how fast the fleet finishes requests.

Waiters re-check when a request ends on the gateway and after every load refresh (``notify``). A request
that can go somewhere never waits behind others for a different model: each waiter checks its own
candidates.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cloud_service.errors import RoutingError

T = TypeVar("T")

RATE_WINDOW_S = 10.0
"""Completions over this window estimate the fleet's rate for retry-after."""
MIN_RETRY_AFTER_S = 0.1
MAX_RETRY_AFTER_S = 30.0


class QueueFullError(RoutingError):
    """No room now and none in the queue (or the wait ran out); retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Waiter:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class AdmissionQueue(Generic[T]):
    def __init__(self, max_queue: int, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._clock = clock
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._completions: collections.deque[float] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def completed(self) -> None:
        """A request ended: note it for the rate and let waiters re-check."""
        now = self._clock()
        self._completions.append(now)
        while self._completions and self._completions[0] < now - RATE_WINDOW_S:
            self._completions.popleft()
        self.notify()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)

    def retry_after_s(self) -> float:
        """How long until the queue ahead has likely drained, from the recent completion rate."""
        now = self._clock()
        recent = sum(1 for t in self._completions if t >= now - RATE_WINDOW_S)
        rate = recent / RATE_WINDOW_S
        estimate = (len(self._waiters) + 1) / rate if rate > 0 else MAX_RETRY_AFTER_S
        return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, estimate))

    async def admit(self, ready: Callable[[], T | None], give_up: Callable[[], bool] = lambda: False) -> T | None:
        """``ready()``'s first non-None answer; None when ``give_up()`` turns true while waiting (an abort).
        QueueFullError when the queue is full or the wait exceeds ``timeout_s``."""
        if not self._waiters:
            found = ready()
            if found is not None:
                return found
        if len(self._waiters) >= self.max_queue:
            raise QueueFullError(f"every replica is saturated and {len(self._waiters)} requests already wait "
                                 f"at the gateway (gateway.max_queue={self.max_queue})", self.retry_after_s())
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future())
        self._waiters.append(waiter)
        deadline = self._clock() + self.timeout_s
        try:
            self.notify()  # those ahead may have room now: let them look first
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    raise QueueFullError(f"every replica stayed saturated for gateway.queue_timeout_s="
                                         f"{self.timeout_s:g} s", self.retry_after_s())
                try:
                    await asyncio.wait_for(asyncio.shield(waiter.future), left)
                except TimeoutError:
                    continue
                if give_up():
                    return None
                found = ready()
                if found is not None:
                    return found
                waiter.future = loop.create_future()
        finally:
            self._waiters.remove(waiter)
