"""Blocking use of any Engine, for callers without an event loop, and collecting a stream into a Completion.

    with SyncEngine(load_bundle(path, trusted_keys=keys)) as engine:
        print(engine.complete(GenerationRequest(prompt="Once upon a time")).text)
        for event in engine.generate(request):      # closing the iterator early cancels the request
            print(event.text, end="")

The wrapped engine runs on a private event loop thread; each call is submitted to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, Coroutine, Iterator
from typing import Any, TypeVar

from edge_runtime.engine import Engine, EngineInfo
from edge_runtime.errors import GenerationError
from edge_runtime.types import Completion, FinishReason, GenerationRequest, TokenEvent, Usage

T = TypeVar("T")


async def collect(stream: AsyncIterable[TokenEvent]) -> Completion:
    """Consume a stream: the whole text, token ids and logprobs, finish reason and usage."""
    text, ids, logprobs = [], [], []
    finish: FinishReason | None = None
    usage: Usage | None = None
    async for event in stream:
        text.append(event.text)
        if event.token_id is not None and event.logprob is not None:
            ids.append(event.token_id)
            logprobs.append(event.logprob)
        finish, usage = event.finish_reason or finish, event.usage or usage
    if finish is None or usage is None:
        raise GenerationError("the stream ended without a finish reason")
    return Completion("".join(text), tuple(ids), tuple(logprobs), finish, usage)


class SyncEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tandem-sync-engine", daemon=True)
        self._thread.start()

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def complete(self, request: GenerationRequest) -> Completion:
        return self._call(collect(self.engine.generate(request)))

    def generate(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        stream = aiter(self.engine.generate(request))

        async def next_event() -> TokenEvent:
            return await anext(stream)

        async def close_stream() -> None:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while True:
                try:
                    yield self._call(next_event())
                except StopAsyncIteration:
                    return
        finally:
            self._call(close_stream())

    def abort(self, request_id: str) -> bool:
        return self._call(self.engine.abort(request_id))

    def close(self) -> None:
        """Close the engine and stop the loop thread."""
        self.engine.close()
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
