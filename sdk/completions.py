"""The objects ``client.chat.completions.create`` returns, shaped like the OpenAI client's, plus the route.

    response.choices[0].message.content     the answer
    response.usage.completion_tokens
    response.route                           where it ran, why, fallbacks, timings (sdk.route.Route)

A stream yields ChatCompletionChunk objects (``chunk.choices[0].delta.content``); the last one carries
``finish_reason``, ``usage`` and the final ``route``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdk.route import Route


@dataclass(frozen=True)
class CompletionUsage:
    prompt_tokens: int
    """As counted by the side that finished the answer (its prompt includes any continued prefix)."""
    completion_tokens: int
    """Tokens delivered to the caller, over every side that contributed."""
    total_tokens: int


@dataclass(frozen=True)
class ChatCompletionMessage:
    content: str
    role: str = "assistant"


@dataclass(frozen=True)
class Choice:
    message: ChatCompletionMessage
    finish_reason: str
    """"stop", "length" or "abort"."""
    index: int = 0
    logprobs: tuple[float, ...] = ()
    """Log-probability of each generated token (both sides report them)."""


@dataclass(frozen=True)
class ChatCompletion:
    id: str
    created: int
    model: str
    choices: tuple[Choice, ...]
    usage: CompletionUsage
    route: Route
    object: str = "chat.completion"


@dataclass(frozen=True)
class ChoiceDelta:
    content: str = ""
    role: str | None = None


@dataclass(frozen=True)
class ChunkChoice:
    delta: ChoiceDelta
    finish_reason: str | None = None
    index: int = 0
    logprobs: tuple[float, ...] = ()


@dataclass(frozen=True)
class ChatCompletionChunk:
    id: str
    created: int
    model: str
    choices: tuple[ChunkChoice, ...]
    usage: CompletionUsage | None = None
    """On the last chunk only."""
    route: Route | None = field(default=None, repr=False)
    """On the last chunk only (the stream's ``route`` property has it too)."""
    object: str = "chat.completion.chunk"
