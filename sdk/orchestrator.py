"""One request from decision to last token: the chosen side, retries, fallback, failover and the cascade.

    decision -> side A --(fails before its first token)--> side B                        (fallback)
             -> side A --(breaks after k tokens)--> side B continues after those k tokens (failover)
             -> device --(a token among the first `window` below min_logprob)--> cloud  (escalation)

The caller's stream never repeats or loses text: the continuing side gets the original request with the
text delivered so far as its assistant prefix (and max_tokens reduced by the tokens delivered). A side that
streams text without token ids (an OpenAI-compatible server) counts each text delta as one token. The delivered
tail also travels as token ids (``prefix_tokens``) tagged with the vocabulary that produced them: a side with
the same vocabulary continues from exactly those ids, so a greedy answer equals an uninterrupted one. With the
cascade on, the device's first ``window_tokens`` tokens are held back until they pass the check, so nothing
below the threshold reaches the caller. A side is retried (with backoff) only when the other side cannot take
over; every side gets at most ``retry.attempts`` tries per request. When neither side can answer, one
NoRouteError lists each side's reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Protocol

from cloud_service.backoff import backoff_delay
from edge_runtime.types import GenerationRequest, PrefixTokens, TokenEvent, Usage
from sdk.backends.edge import EdgeSide
from sdk.backends.failure import LinkFailure, SideFailure
from sdk.backends.stream import SideStream
from sdk.breaker import CircuitBreaker
from sdk.bundle_routing import BundleRouting
from sdk.decision import CloudHealth, Decision, DeviceHealth, decide
from sdk.difficulty import Difficulty, DifficultyEstimator
from sdk.errors import NoRouteError
from sdk.policy import Mode, Policy
from sdk.reasons import Reason, Side
from sdk.route import Continuation, RouteBuilder, SwitchKind
from sdk.signals.hub import SignalHub


class SideBackend(Protocol):
    side: Side

    def generate(self, request: GenerationRequest) -> SideStream: ...


class _Escalate(Exception):
    pass


def counts(event: TokenEvent) -> bool:
    """Whether an event is a token of the answer: one with an id, or a text delta of a side that streams text
    without ids (an OpenAI-compatible server). The closing event of an aborted stream is neither."""
    return event.token_id is not None or bool(event.text)


async def cascade(events: AsyncIterator[TokenEvent], window: int, min_logprob: float) -> AsyncIterator[TokenEvent]:
    """Hold back the first ``window`` tokens; raise _Escalate if one of them is below ``min_logprob``."""
    held: list[TokenEvent] = []
    seen = 0
    async with aclosing(events):
        async for event in events:
            if seen >= window:
                yield event
                continue
            if event.token_id is not None:
                seen += 1
                if event.logprob is not None and event.logprob < min_logprob:
                    raise _Escalate
            held.append(event)
            if seen >= window or event.finish_reason is not None:
                for kept in held:
                    yield kept
                held.clear()


@dataclasses.dataclass
class Delivered:
    """What reached the caller so far; its tail as token ids of one vocabulary (for an exact continuation)."""

    text: str = ""
    tokens: int = 0
    vocabulary: str = ""
    ids: list[int] = dataclasses.field(default_factory=list)
    ids_text: str = ""
    """The text of ``ids`` (the end of ``text``)."""
    unreleased: int = 0
    """Trailing tokens whose text has not reached the caller yet (part of a character, or held back as the
    start of a stop sequence): a continuation generates them again rather than lose their text."""

    def add(self, event: TokenEvent, vocabulary: str) -> None:
        self.text += event.text
        if self.ids:
            self.ids_text += event.text
        if event.token_id is None:
            if event.text:  # a text delta without ids: it counts, and the ids no longer reach the end of text
                self.tokens += 1
                self.unreleased = 0
                self.vocabulary, self.ids, self.ids_text = "", [], ""
            return
        self.tokens += 1
        self.unreleased = 0 if event.text else self.unreleased + 1
        if vocabulary != self.vocabulary:  # another vocabulary's ids cannot follow these: start over
            self.vocabulary, self.ids, self.ids_text = vocabulary, [], event.text
        if vocabulary:
            self.ids.append(event.token_id)

    def rewind(self) -> None:
        """Forget the unreleased tokens (before continuing elsewhere)."""
        if self.unreleased:
            self.tokens -= self.unreleased
            del self.ids[max(0, len(self.ids) - self.unreleased):]
            self.unreleased = 0
            if not self.ids:
                self.ids_text = ""

    def prefix_tokens(self) -> PrefixTokens | None:
        return PrefixTokens(self.vocabulary, tuple(self.ids), self.ids_text) if self.ids else None


def continuation(request: GenerationRequest, delivered: Delivered, attempt: int) -> GenerationRequest:
    """The request that goes on after what was ``delivered``."""
    if not delivered.text and not delivered.tokens:
        return dataclasses.replace(request, request_id=f"{request.request_id}-{attempt}") if attempt else request
    sampling = request.sampling
    if sampling.max_tokens is not None:
        sampling = dataclasses.replace(sampling, max_tokens=max(1, sampling.max_tokens - delivered.tokens))
    return dataclasses.replace(request, assistant_prefix=request.assistant_prefix + delivered.text,
                               prefix_tokens=delivered.prefix_tokens(), sampling=sampling,
                               request_id=f"{request.request_id}-{attempt}")


class Orchestrator:
    """Runs requests on the sides: owns the routing state (bundle router, cascade) and the per-side breakers."""

    def __init__(self, policy: Policy, *, edge: EdgeSide | None, cloud: SideBackend | None, signals: SignalHub,
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self.edge = edge
        self.signals = signals
        self.sides: dict[Side, SideBackend] = {}
        if edge is not None:
            self.sides[Side.DEVICE] = edge
        if cloud is not None:
            self.sides[Side.CLOUD] = cloud
        self.routing = BundleRouting(policy, edge)
        self.rng = rng or random.Random()
        retry = policy.retry
        self.breakers = {side: CircuitBreaker(retry.breaker_failures, retry.breaker_reset_s) for side in Side}

    def estimator(self) -> DifficultyEstimator:
        """The difficulty estimator requests are routed with now (``BundleRouting.estimator``)."""
        return self.routing.estimator()

    def decide(self, request: GenerationRequest, mode: Mode) -> tuple[Decision, Difficulty]:
        messages = request.messages or ()
        difficulty = self.routing.estimator().estimate(messages, request.sampling.max_tokens)
        blocked = self.breakers[Side.DEVICE].blocks
        device = self.edge.health(blocked) if self.edge is not None and Side.DEVICE in self.sides else \
            DeviceHealth(False, False, False, False, None, False)
        cloud = CloudHealth(Side.CLOUD in self.sides, self.breakers[Side.CLOUD].blocks)
        return decide(mode, self.signals.current(), difficulty, device, cloud, self.policy.routing), difficulty

    def _link_heard(self, ok: bool) -> None:
        link = self.signals.link
        if link is not None:
            link.report_success() if ok else link.report_failure()

    async def run(self, request: GenerationRequest, mode: Mode, route: RouteBuilder) -> AsyncIterator[TokenEvent]:
        started = time.perf_counter()
        decision, difficulty = self.decide(request, mode)
        route.decision_us = (time.perf_counter() - started) * 1e6
        route.reasons, route.difficulty = decision.reasons, difficulty
        failures = {str(side): str(why) for side, why in decision.blocked}
        if decision.target is None:
            raise NoRouteError(failures or {"device": "unavailable", "cloud": "unavailable"})
        allowed = {decision.target} | ({decision.fallback} if decision.fallback else set())
        tries = dict.fromkeys(Side, 0)
        exhausted: set[Side] = set()
        side = decision.target
        use_cascade = (self.policy.cascade.enabled and side is Side.DEVICE and Side.CLOUD in allowed)
        delivered, attempt_no = Delivered(), 0
        codes: dict[str, str] = {}
        while True:
            backend = self.sides[side]
            breaker = self.breakers[side]
            got, with_ids = 0, False
            if not breaker.allow():
                failures[str(side)], codes[str(side)] = "circuit breaker open", "BREAKER_OPEN"
                exhausted.add(side)
                failure: SideFailure | None = SideFailure(
                    side, Reason.CLOUD_BREAKER_OPEN if side is Side.CLOUD else Reason.DEVICE_BREAKER_OPEN,
                    "circuit breaker open", retryable=False, code="BREAKER_OPEN")
            else:
                tries[side] += 1
                delivered.rewind()
                sub = continuation(request, delivered, attempt_no)
                attempt_no += 1
                failure = None
                stream = backend.generate(sub)
                events: AsyncIterator[TokenEvent] = stream
                if use_cascade and delivered.tokens == 0:
                    settings = self.routing.cascade()
                    assert settings.window_tokens is not None and settings.min_logprob is not None  # resolved
                    events = cascade(events, settings.window_tokens, settings.min_logprob)
                try:
                    async with aclosing(events):
                        async for event in events:
                            counted = counts(event)
                            got += counted
                            with_ids |= event.token_id is not None
                            delivered.add(event, stream.vocabulary)
                            route.token(event.text, counted)
                            if event.finish_reason is not None and event.usage is not None:
                                # A text-only side's own count beats counting its deltas (one may hold several
                                # tokens); with ids, every token was an event.
                                done = delivered.tokens if with_ids else delivered.tokens - got + \
                                    event.usage.completion_tokens
                                event = dataclasses.replace(event, usage=Usage(
                                    event.usage.prompt_tokens, done, event.usage.cached_tokens))
                            yield event
                    breaker.success()
                    if side is Side.CLOUD:
                        self._link_heard(True)
                    route.attempt(side, stream.model, stream.version, got, True, detail=stream.note,
                                  continuation=_continued(sub, stream))
                    route.finished_at = time.perf_counter()
                    return
                except _Escalate:
                    route.attempt(side, stream.model, stream.version, 0, False, "LOW_CONFIDENCE")
                    route.switch(SwitchKind.ESCALATION, side, Side.CLOUD, Reason.LOW_CONFIDENCE)
                    use_cascade, side = False, Side.CLOUD
                    continue
                except SideFailure as caught:
                    failure = caught
                    breaker.failure()
                    if isinstance(caught, LinkFailure):
                        self._link_heard(False)
                    route.attempt(side, stream.model, stream.version, got, False, caught.code, caught.detail,
                                  _continued(sub, stream))
                    failures[str(side)], codes[str(side)] = caught.detail, caught.code
                    if not caught.retryable or tries[side] >= self.policy.retry.attempts:
                        exhausted.add(side)
            assert failure is not None
            other = side.other
            if other in allowed and other not in exhausted:
                kind = SwitchKind.FAILOVER if delivered.tokens else SwitchKind.FALLBACK
                reason = Reason.STREAM_BROKEN if got else failure.reason
                route.switch(kind, side, other, reason, failure.code)
                side = other
                continue
            if side not in exhausted:
                route.switch(SwitchKind.RETRY, side, side, failure.reason, failure.code)
                retry = self.policy.retry
                if not got:
                    delay = backoff_delay(tries[side] - 1, base_s=retry.base_delay_s, cap_s=retry.max_delay_s,
                                          rng=self.rng)
                    if failure.retry_after_s is not None:  # the side asked for a pause (HTTP 429), within the cap
                        delay = max(delay, min(failure.retry_after_s, retry.max_delay_s))
                    await asyncio.sleep(delay)
                continue
            raise NoRouteError(failures, codes)



def _continued(request: GenerationRequest, stream: SideStream) -> Continuation:
    """How ``stream`` went on from ``request``'s assistant prefix: as its side said, else from the prefix's
    token ids when they are of the stream's vocabulary, else from the text."""
    if not request.assistant_prefix:
        return Continuation.NONE
    if stream.continuation is not None:
        return stream.continuation
    tokens = request.prefix_tokens
    if tokens is not None and stream.vocabulary and tokens.vocabulary == stream.vocabulary:
        return Continuation.TOKENS
    return Continuation.PREFILL
