"""The types every engine speaks: a generation request in, a stream of token events out.

    request = GenerationRequest(
        messages=[Message("user", "Name three colours.")],
        sampling=SamplingParams(temperature=0.0, max_tokens=64),
    )
    async for event in engine.generate(request):
        print(event.text, end="")

Everything is validated where it is built (``__post_init__``), so an engine never sees an invalid request;
the errors are ``InvalidRequestError`` whose message starts with the field's path in the wire's
``tandem.v1.GenerateRequest`` (protos/tandem/v1/inference.proto), the same path whichever way the request came:
``sampling.temperature``, ``sampling.stop[1]``, ``chat.messages[2].content``, ``prefix_tokens.ids``,
``assistant_prefix``, ``request_id``. A ``Message`` built on its own does not know its index: it says
``chat.messages[]``; ``chat_messages`` builds a request's messages naming each one's index.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from edge_runtime.errors import InvalidRequestError

ROLES = ("system", "user", "assistant", "tool")
MESSAGES = "chat.messages"
"""The messages' path in the wire's GenerateRequest (the ``chat`` input), which their errors name."""


class FinishReason(StrEnum):
    STOP = "stop"
    """The model emitted an end-of-sequence token or a stop sequence matched."""
    LENGTH = "length"
    """max_tokens reached, or the context is full."""
    ABORT = "abort"
    """The request was cancelled (abort by id, the caller went away)."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def __post_init__(self) -> None:
        _check_message(self.role, self.content, f"{MESSAGES}[]")


def _check_message(role: object, content: object, where: str) -> None:
    if role not in ROLES:
        raise InvalidRequestError(f"{where}.role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise InvalidRequestError(f"{where}.content must be a string, not {type(content).__name__}")


def chat_messages(pairs: Iterable[tuple[str, str]]) -> tuple[Message, ...]:
    """A request's messages from (role, content) pairs; an invalid one is named by its index
    (``chat.messages[2].role 'robot' is not one of ...``)."""
    messages = []
    for index, (role, content) in enumerate(pairs):
        _check_message(role, content, f"{MESSAGES}[{index}]")
        messages.append(Message(role, content))
    return tuple(messages)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. ``temperature=0`` is greedy decoding (top_p/top_k/seed are then unused)."""

    temperature: float = 1.0
    """0 for greedy; otherwise logits are divided by it before sampling."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (0 < top_p <= 1)."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 keeps all."""
    max_tokens: int | None = 256
    """Most tokens to generate; None: until the end of sequence or the end of the context."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; the matched stop string is not part of the output."""
    seed: int | None = None
    """Seed of the sampler: the same seed, request and bundle give the same tokens."""
    ignore_eos: bool = False
    """Keep generating past the end-of-sequence token (benchmarks)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature)) or self.temperature < 0:
            raise InvalidRequestError(f"sampling.temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise InvalidRequestError(f"sampling.top_p must lie in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise InvalidRequestError(f"sampling.top_k must be an integer >= 0 (0 = all tokens), got {self.top_k!r}")
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1
        ):
            raise InvalidRequestError(f"sampling.max_tokens must be an integer >= 1 or None, got {self.max_tokens!r}")
        if self.stop is None:
            object.__setattr__(self, "stop", ())
        elif isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, list | tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        else:
            raise InvalidRequestError(f"sampling.stop must be a string or a list of strings, got {self.stop!r}")
        for index, sequence in enumerate(self.stop):
            if not isinstance(sequence, str) or not sequence:
                raise InvalidRequestError(f"sampling.stop[{index}] must be a non-empty string, got {sequence!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise InvalidRequestError(f"sampling.seed must be an integer >= 0 or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass(frozen=True)
class PrefixTokens:
    """The tail ``text`` of an assistant prefix as the token ``ids`` an engine generated it with, in the
    vocabulary whose fingerprint is ``vocabulary`` (``EngineInfo.vocabulary``)."""

    vocabulary: str
    ids: tuple[int, ...]
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(self.ids))
        if not isinstance(self.vocabulary, str) or not self.vocabulary:
            raise InvalidRequestError("prefix_tokens.vocabulary must name the vocabulary's fingerprint")
        if not self.ids or not all(isinstance(i, int) and i >= 0 for i in self.ids):
            raise InvalidRequestError("prefix_tokens.ids must be one or more non-negative token ids")
        if not isinstance(self.text, str):
            raise InvalidRequestError("prefix_tokens.text must be a string")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: chat ``messages`` (formatted with the model's own template) or a raw ``prompt``.

    ``assistant_prefix`` starts the answer with given text, and the stream yields exactly what follows it
    (used to continue a partial answer on another engine). With a raw prompt the prefix is appended to it.
    ``prefix_tokens`` optionally gives the prefix's tail as token ids: an engine with the same vocabulary feeds
    those ids instead of re-tokenizing that text (a re-tokenization may split it differently from how it was
    generated), so a greedy answer continued there equals the uninterrupted one exactly.
    """

    messages: Sequence[Message] | None = None
    prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    assistant_prefix: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    prefix_tokens: PrefixTokens | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidRequestError(f"input: give either {MESSAGES} or prompt, not both and not neither")
        if self.messages is not None:
            if not isinstance(self.messages, list | tuple):
                raise InvalidRequestError(f"{MESSAGES} must be a list of Message, got {type(self.messages).__name__}")
            messages = tuple(self.messages)
            if not messages:
                raise InvalidRequestError(f"{MESSAGES} is empty; give at least one message")
            for index, message in enumerate(messages):
                if not isinstance(message, Message):
                    raise InvalidRequestError(f"{MESSAGES}[{index}] must be an edge_runtime.Message, "
                                              f"got {type(message).__name__}")
            object.__setattr__(self, "messages", messages)
        elif not isinstance(self.prompt, str) or not self.prompt:
            raise InvalidRequestError("prompt must be a non-empty string")
        if not isinstance(self.assistant_prefix, str):
            raise InvalidRequestError("assistant_prefix must be a string")
        if self.prefix_tokens is not None:
            if not isinstance(self.prefix_tokens, PrefixTokens):
                raise InvalidRequestError(f"prefix_tokens must be an edge_runtime.PrefixTokens, "
                                          f"got {type(self.prefix_tokens).__name__}")
            if not self.assistant_prefix.endswith(self.prefix_tokens.text):
                raise InvalidRequestError("prefix_tokens.text must be the end of assistant_prefix")
        if not isinstance(self.sampling, SamplingParams):
            raise InvalidRequestError(f"sampling must be an edge_runtime.SamplingParams, "
                                      f"got {type(self.sampling).__name__}")
        if not isinstance(self.request_id, str) or not self.request_id:
            raise InvalidRequestError("request_id must be a non-empty string")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Prompt tokens whose KV cache was reused from the previous request."""


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. ``text`` is the new text it makes visible: it can be empty (an incomplete UTF-8
    character, text held back while it may start a stop sequence, an end-of-sequence token) and it can hold
    text of earlier tokens released at once. The concatenated ``text`` of a stream is the whole answer."""

    text: str
    token_id: int | None
    """None only on the closing event of an aborted stream, which carries no token."""
    logprob: float | None
    """Natural log of the chosen token's probability under the model (before temperature/top-k/top-p);
    None only when token_id is None."""
    finish_reason: FinishReason | None = None
    """Set on the last event only."""
    usage: Usage | None = None
    """Set on the last event only."""


@dataclass(frozen=True)
class Completion:
    """A whole generation, as collected from a stream (``edge_runtime.collect``)."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    usage: Usage
