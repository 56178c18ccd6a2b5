"""LoopThread: a private asyncio event loop on a daemon thread, for the blocking facades over async APIs.

    loop = LoopThread("tandem-sync-engine", closed=EngineClosedError)
    completion = loop.call(collect(engine.generate(request)))     # blocks until the coroutine finishes
    for event in loop.iterate(engine.generate(request)):          # leaving early closes the async stream
        ...
    loop.stop()

``SyncEngine`` (edge_runtime) and ``HybridClient`` (sdk) are the same async object driven from blocking code;
both use this one loop thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str, *, closed: Callable[[], BaseException]) -> None:
        """Start the loop; ``closed()`` is the exception a call raises once the loop is stopped."""
        self._closed_error = closed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._loop.is_closed()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (its exception is raised here)."""
        if self._loop.is_closed():
            coroutine.close()
            raise self._closed_error()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Schedule ``coroutine`` without waiting (e.g. closing a stream from a finaliser); dropped once stopped."""
        if self._loop.is_closed():
            coroutine.close()
            return
        asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def next(self, stream: AsyncIterator[T]) -> T:
        """The next item of ``stream``; StopIteration at its end."""
        try:
            return self.call(_anext(stream))
        except StopAsyncIteration:
            raise StopIteration from None

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """``stream``'s items as a blocking iterator; leaving it early closes ``stream`` on the loop."""
        try:
            while True:
                try:
                    yield self.next(stream)
                except StopIteration:
                    return
        finally:
            self.call(_aclose(stream))

    def stop(self) -> None:
        """Stop the loop and join its thread; idempotent."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _anext(stream: AsyncIterator[T]) -> T:
    return await anext(stream)


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
