"""A request's path from an engine's worker thread to the caller's event loop, shared by every engine that
generates on a thread of its own (the local engines here, the CPU batching engine in the cloud tier).

The worker ``send``s TokenEvents (or an exception) and finally ``END``; the caller iterates ``stream``.
When the caller leaves early, ``stream`` runs the engine's ``on_leave`` (drop the request from the queue, or
stop it and wait for ``END`` so the slot is free when ``aclose()`` returns).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.types import GenerationRequest, TokenEvent

END = object()
"""The last item a worker sends on a channel."""


@dataclass(eq=False)
class RequestChannel:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set by the caller (left, aborted) or the engine (closing); the worker stops at its next token."""
    aborted: bool = False
    """Cancelled by abort(id): the stream gets a closing ABORT event (a caller that left gets nothing)."""
    finished: bool = False
    """The caller has read END."""

    def send(self, item: TokenEvent | BaseException | object) -> None:
        """Thread-safe: hand an item to the caller's loop."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled.set()

    async def stream(self, on_leave: Callable[[RequestChannel], Awaitable[None]]) -> AsyncIterator[TokenEvent]:
        try:
            while (item := await self.events.get()) is not END:
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
        while await self.events.get() is not END:
            pass
        self.finished = True
