"""A request's path from an engine's worker thread to the caller's event loop, shared by every engine that
generates on a thread of its own (the local engines here, the CPU batching engine in the cloud tier).

The worker ``send``s TokenEvents (or an exception) and finally ``END``; the caller iterates ``stream``.
Waking the caller's event loop costs a thread switch that, on a device whose cores all run the model,
slows decoding measurably; so events are handed over in batches: the first token, the last item and
anything after a pause go at once, tokens that follow each other faster than ``STREAM_INTERVAL_S`` share one
wake-up (a delay of at most that interval plus one token's time, invisible in a streamed answer).
A batching engine feeds many channels per step: it passes a ``Wakes`` to ``send`` and flushes it after the
step, so each event loop is woken once per step rather than once per stream (each wake-up also hands the
loop the GIL while the worker waits for it back).
When the caller leaves early, ``stream`` runs the engine's ``on_leave`` (drop the request from the queue, or
stop it and wait for ``END`` so the slot is free when ``aclose()`` returns).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage

END = object()
"""The last item a worker sends on a channel."""

STREAM_INTERVAL_S = 0.01
"""Shortest time between two wake-ups of the caller's loop while tokens stream faster than that."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        _wake(waiter)


class Wakes:
    """Wake-ups a worker collects during one step, handed to each event loop in one call by ``flush``."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestChannel, asyncio.Future[None]]]] = {}

    def add(self, channel: RequestChannel, waiter: asyncio.Future[None]) -> None:
        self._by_loop.setdefault(channel.loop, []).append((channel, waiter))

    def flush(self) -> None:
        by_loop, self._by_loop = self._by_loop, {}
        for loop, pending in by_loop.items():
            try:
                loop.call_soon_threadsafe(_wake_all, [waiter for _, waiter in pending])
            except RuntimeError:  # that loop is closed: nobody is listening any more
                for channel, _ in pending:
                    channel.cancelled.set()


class RequestChannel:
    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.cancelled = threading.Event()
        """Set by the caller (left, aborted) or the engine (closing); the worker stops at its next token."""
        self.aborted = False
        """Cancelled by abort(id): the stream gets a closing ABORT event (a caller that left gets nothing)."""
        self.finished = False
        """The caller has read END."""
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._woken_at = 0.0
        self._sent_tokens = 0

    def send(self, item: TokenEvent | BaseException | object, wakes: Wakes | None = None) -> None:
        """Thread-safe: hand an item to the caller's loop (see the module docstring for when it wakes); with
        ``wakes``, the wake-up waits in it for ``wakes.flush()``."""
        now = time.monotonic()
        urgent = (
            not isinstance(item, TokenEvent) or item.finish_reason is not None or self._sent_tokens == 0
            or now - self._woken_at >= STREAM_INTERVAL_S
        )
        with self._lock:
            self._items.append(item)
            self._sent_tokens += isinstance(item, TokenEvent)
            waiter = self._waiter if urgent else None
            if waiter is not None:
                self._waiter = None
        if waiter is not None:
            self._woken_at = now
            if wakes is not None:
                wakes.add(self, waiter)
                return
            try:
                self.loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                self.cancelled.set()

    async def _next(self) -> Any:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                waiter = self._waiter = self.loop.create_future()
            await waiter

    async def stream(self, on_leave: Callable[[RequestChannel], Awaitable[None]]) -> AsyncIterator[TokenEvent]:
        try:
            while (item := await self._next()) is not END:
                if isinstance(item, BaseException):
                    raise item
                yield item
            self.finished = True
        finally:
            if not self.finished:
                self.cancelled.set()
                await on_leave(self)

    async def wait_until_end(self) -> None:
        """Discard events until the worker is done with this request."""
        while await self._next() is not END:
            pass
        self.finished = True


def abort_request(
    lock: threading.Condition | threading.Lock,
    request_id: str,
    waiting: collections.deque[RequestChannel],
    running: Callable[[], Iterable[RequestChannel]],
) -> bool:
    """An engine's ``abort(id)``: a queued request leaves the queue and its stream ends with ABORT at once; a
    running one is flagged and its worker ends it with ABORT at the next token. False for an unknown id."""
    with lock:
        queued = next((c for c in waiting if c.request.request_id == request_id), None)
        if queued is not None:
            waiting.remove(queued)
        target = queued or next((c for c in running() if c.request.request_id == request_id), None)
        if target is None:
            return False
        target.aborted = True
        target.cancelled.set()
    if queued is not None:
        queued.send(TokenEvent("", None, None, FinishReason.ABORT, Usage(0, 0)))
        queued.send(END)
    return True
