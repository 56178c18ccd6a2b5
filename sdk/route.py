"""The route of a request: where it ran, why, what went wrong on the way, and how fast it was.

Every response and stream carries one (``response.route``). ``RouteBuilder`` records it while the request
runs; ``build()`` freezes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from sdk.difficulty import Difficulty
from sdk.reasons import Reason, Side


class SwitchKind(StrEnum):
    FALLBACK = "fallback"
    """The side failed before its first token; the other side answers."""
    FAILOVER = "failover"
    """The stream broke after some tokens; the other side continues from the partial answer."""
    RETRY = "retry"
    """The same side is tried again (no other side could take over)."""
    ESCALATION = "escalation"
    """The confidence cascade sent the request from the device to the cloud."""


class Continuation(StrEnum):
    """How an attempt that started from delivered text (a failover, or the caller's ``assistant_prefix``)
    went on from it."""

    NONE = ""
    """It started a fresh answer (nothing had been delivered)."""
    TOKENS = "tokens"
    """From the delivered token ids (same vocabulary): a greedy answer equals the uninterrupted one."""
    PREFILL = "prefill"
    """From the delivered text as the start of its own answer (re-tokenized; an OpenAI-compatible server that
    honours ``continue_final_message``)."""
    WITHOUT_PREFILL = "without_prefill"
    """The server cannot continue an answer: it got the delivered text as an earlier assistant turn and
    answered anew; any start of its answer that repeated the delivered text was cut (the attempt's detail
    says how much). The text is whole and not repeated, but it is not the model's own continuation."""


@dataclass(frozen=True)
class Switch:
    kind: SwitchKind
    from_side: Side
    to_side: Side
    reason: Reason
    code: str
    """The error's short name (gRPC status, edge-runtime error class), or "" for an escalation."""
    after_tokens: int
    """Tokens the caller had received when the switch happened."""
    after_chars: int = 0
    """Characters of answer text the caller had received (the continuing side's assistant prefix)."""


@dataclass(frozen=True)
class Attempt:
    side: Side
    model: str
    version: str
    tokens: int
    """Tokens this attempt delivered to the caller."""
    ok: bool
    code: str = ""
    detail: str = ""
    continuation: Continuation = Continuation.NONE
    """How this attempt went on from the text delivered before it (NONE when it started the answer)."""


@dataclass(frozen=True)
class Timings:
    decision_us: float
    ttft_s: float | None
    """From the call to the first token with text (None if there was none)."""
    total_s: float
    tokens_per_s: float | None
    """Completion tokens per second after the first token."""


@dataclass(frozen=True)
class Route:
    side: Side
    """Where the answer finished."""
    model: str
    version: str
    reasons: tuple[Reason, ...]
    """Why the first side was chosen."""
    difficulty: Difficulty
    switches: tuple[Switch, ...]
    attempts: tuple[Attempt, ...]
    timings: Timings
    tokens: int

    @property
    def fallbacks(self) -> tuple[Switch, ...]:
        """Every switch from one side to the other (fallbacks, failovers and escalations)."""
        return tuple(s for s in self.switches if s.from_side is not s.to_side)

    @property
    def sides(self) -> tuple[Side, ...]:
        """The sides that delivered tokens, in order."""
        seen: list[Side] = []
        for attempt in self.attempts:
            if attempt.tokens and (not seen or seen[-1] is not attempt.side):
                seen.append(attempt.side)
        return tuple(seen)


class RouteBuilder:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.reasons: tuple[Reason, ...] = ()
        self.difficulty = Difficulty(0.0, False, "heuristic")
        self.decision_us = 0.0
        self.switches: list[Switch] = []
        self.attempts: list[Attempt] = []
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.tokens = 0
        self.chars = 0
        self.side: Side | None = None
        self.model = ""
        self.version = ""

    def token(self, text: str, counts: bool = True) -> None:
        """An event reached the caller: ``text``, and a token when ``counts``."""
        self.tokens += counts
        self.chars += len(text)
        if text and self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def attempt(self, side: Side, model: str, version: str, tokens: int, ok: bool, code: str = "",
                detail: str = "", continuation: Continuation = Continuation.NONE) -> None:
        self.attempts.append(Attempt(side, model, version, tokens, ok, code, detail, continuation))
        if ok or tokens:
            self.side, self.model, self.version = side, model, version

    def switch(self, kind: SwitchKind, from_side: Side, to_side: Side, reason: Reason, code: str = "") -> None:
        self.switches.append(Switch(kind, from_side, to_side, reason, code, self.tokens, self.chars))

    def build(self) -> Route:
        end = self.finished_at or time.perf_counter()
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        rate = None
        if self.first_token_at is not None and self.tokens > 1 and end > self.first_token_at:
            rate = (self.tokens - 1) / (end - self.first_token_at)
        side = self.side or (self.attempts[-1].side if self.attempts else Side.DEVICE)
        return Route(side, self.model, self.version, self.reasons, self.difficulty, tuple(self.switches),
                     tuple(self.attempts), Timings(self.decision_us, ttft, end - self.started, rate), self.tokens)
