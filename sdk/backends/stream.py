"""SideStream: one side's answer to one request, carrying the model that serves it.

    stream = side.generate(request)
    async for event in stream:            # edge_runtime.TokenEvent
        ...stream.model, stream.version, stream.vocabulary
    await stream.aclose()

What serves a request is a fact of that request, not of the side: two concurrent cloud streams may be served
by two versions with different vocabularies (a canary), and a device stream keeps the engine it started on
when provisioning swaps the bundle. So each stream holds its own model, version and vocabulary fingerprint,
set by the side as the stream learns them (the cloud's first chunk names its version and vocabulary).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Self

from edge_runtime.types import TokenEvent
from sdk.reasons import Side
from sdk.route import Continuation


class SideStream:
    """An async iterator of TokenEvent from one side; ``aclose`` ends the request there."""

    def __init__(self, side: Side, model: str, version: str,
                 events: Callable[[SideStream], AsyncIterator[TokenEvent]], vocabulary: str = "") -> None:
        self.side = side
        self.model = model
        self.version = version
        """The serving model's version ("" until the side knows it)."""
        self.vocabulary = vocabulary
        """The serving model's vocabulary fingerprint ("" unknown): which sides can continue from its ids."""
        self.continuation: Continuation | None = None
        """How the side went on from the request's assistant prefix, when the side knows better than the
        orchestrator's guess (which goes by the prefix's token ids and this stream's vocabulary)."""
        self.note = ""
        """What the side wants the route to say about this stream (e.g. text it cut), "" for nothing."""
        self._events = events(self)

    def serving(self, model: str, version: str, vocabulary: str) -> None:
        """What serves this stream, as the side learned it; an empty value leaves the field as it was."""
        self.model = model or self.model
        self.version = version or self.version
        self.vocabulary = vocabulary or self.vocabulary

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TokenEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()  # type: ignore[attr-defined]
