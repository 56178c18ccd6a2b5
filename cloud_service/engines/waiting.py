"""The queue in front of a batching engine's scheduler thread (the CPU and llama.cpp engines share it).

    queue = WaitingQueue("assistant", max_waiting=256)
    async for event in queue.stream(request):   # admission, then the events; leaving early drops it
        ...
    with queue.wake:                             # the scheduler thread, between steps
        while not queue and not rows and not queue.closed:
            queue.wake.wait()
        admitted = queue.take(free_slots)

Admission refuses a closed engine (EngineClosedError) and a full queue (EngineBusyError, which the server
answers RESOURCE_EXHAUSTED). A caller that leaves before its turn is dropped from the queue; one that leaves
later waits for the scheduler to end its request (the slot is free when ``aclose()`` returns). ``close`` ends
every queued request with EngineClosedError; the running ones are the scheduler's to end.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable, Iterable

from edge_runtime.channel import END, RequestChannel, abort_request
from edge_runtime.errors import EngineBusyError, EngineClosedError
from edge_runtime.types import GenerationRequest, TokenEvent


class WaitingQueue:
    def __init__(self, model: str, max_waiting: int) -> None:
        self.model = model
        self.max_waiting = max_waiting
        self.wake = threading.Condition()
        """Guards the queue and ``closed``; notified when a request arrives or the engine closes."""
        self.closed = False
        self._channels: collections.deque[RequestChannel] = collections.deque()

    def __len__(self) -> int:
        return len(self._channels)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Queue ``request`` for the scheduler and yield its events."""
        channel = RequestChannel(request, asyncio.get_running_loop())
        with self.wake:
            if self.closed:
                raise EngineClosedError(f"{self.model}: the engine is closed")
            if len(self._channels) >= self.max_waiting:
                raise EngineBusyError(f"{self.model}: {len(self._channels)} requests are already waiting "
                                      f"(max_waiting={self.max_waiting}); retry later")
            self._channels.append(channel)
            self.wake.notify()
        events = channel.stream(self._left)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def _left(self, channel: RequestChannel) -> None:
        with self.wake:
            if channel in self._channels:
                self._channels.remove(channel)
                return
        await channel.wait_until_end()

    def take(self, count: int) -> list[RequestChannel]:
        """The next ``count`` (at most) queued requests, in arrival order; call it holding ``wake``."""
        return [self._channels.popleft() for _ in range(min(count, len(self._channels)))]

    def abort(self, request_id: str, running: Callable[[], Iterable[RequestChannel]]) -> bool:
        """An engine's ``abort(id)``, for a queued request or one of ``running()`` (``abort_request``)."""
        return abort_request(self.wake, request_id, self._channels, running)

    def close(self) -> bool:
        """Refuse new requests and end the queued ones with EngineClosedError; False when already closed."""
        with self.wake:
            if self.closed:
                return False
            self.closed = True
            queued, self._channels = list(self._channels), collections.deque()
            self.wake.notify_all()
        for channel in queued:
            channel.send(EngineClosedError(f"{self.model}: the engine was closed before this request ran"))
            channel.send(END)
        return True
