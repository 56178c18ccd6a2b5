"""Blocking use of any Engine, for callers without an event loop, and collecting a stream into a Completion.

    with SyncEngine(load_bundle(path, trusted_keys=keys)) as engine:
        print(engine.complete(GenerationRequest(prompt="Once upon a time")).text)
        for event in engine.generate(request):      # closing the iterator early cancels the request
            print(event.text, end="")

The wrapped engine runs on a private event loop thread (``loop_thread.LoopThread``); each call is submitted
to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterator

from edge_runtime.engine import Engine, EngineInfo
from edge_runtime.errors import EngineClosedError, GenerationError
from edge_runtime.loop_thread import LoopThread
from edge_runtime.types import Completion, FinishReason, GenerationRequest, TokenEvent, Usage


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
        self._loop = LoopThread("tandem-sync-engine", closed=lambda: EngineClosedError("the engine is closed"))

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    def complete(self, request: GenerationRequest) -> Completion:
        return self._loop.call(collect(self.engine.generate(request)))

    def generate(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        return self._loop.iterate(aiter(self.engine.generate(request)))

    def abort(self, request_id: str) -> bool:
        return self._loop.call(self.engine.abort(request_id))

    def close(self) -> None:
        """Close the engine and stop the loop thread."""
        self.engine.close()
        self._loop.stop()

    def __enter__(self) -> SyncEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
