"""One request's generation, split in two so that single-sequence and batching engines share it:

- ``SequenceState`` turns each row of logits into the next TokenEvent (sampling, end of sequence, stop
  sequences, detokenization, max_tokens and context limits, usage);
- ``run_generation`` is the single-sequence loop over a Decoder: prompt -> prefill -> (advance,
  decode_one_token)*. It runs on the engine's worker thread; ``emit`` hands each event to the caller's loop
  and ``cancelled`` is polled before every token, so a cancel takes effect within one decode step.

Given a helper thread (``overlap``), the loop picks each token, starts the decode step that needs it, and lets
the helper turn the token into its event (logprob, detokenization, stop sequences, emit) meanwhile: that work
costs the decode loop nothing while the runtime computes with the GIL released. The one step it cannot know in
advance is a stop sequence completing, so such a sequence decodes one token more than it returns. The first
token's event is made by the loop itself before the next step, so that the helper's wake-up stays out of TTFT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Executor
from typing import Protocol

import numpy as np

from edge_runtime.chat import ChatTemplate, prompt_text
from edge_runtime.decoder import Decoder, Detokenizer
from edge_runtime.errors import InvalidRequestError, PromptTooLongError
from edge_runtime.sampling import Sampler
from edge_runtime.stops import StopMatcher
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage


def check_prompt_length(prompt_tokens: int, context_length: int) -> None:
    if prompt_tokens >= context_length:
        raise PromptTooLongError(
            f"the prompt is {prompt_tokens} tokens; this engine's context holds {context_length}, leaving no "
            "room to generate: shorten the prompt or send it to a model with a longer context",
            prompt_tokens=prompt_tokens,
            context_length=context_length,
        )


class Tokenizes(Protocol):
    def tokenize(self, text: str, *, add_special: bool) -> list[int]: ...


def prompt_ids(tokenizer: Tokenizes, request: GenerationRequest, template: ChatTemplate | None) -> list[int]:
    """The request's prompt as every engine feeds it: formatted by ``prompt_text``, then tokenized. When the
    request carries ``prefix_tokens`` of this tokenizer's vocabulary, the prefix's tail is those ids as given;
    an id outside the vocabulary is the caller's mistake (InvalidRequestError), not the runtime's."""
    given = request.prefix_tokens
    if given is not None and given.vocabulary == getattr(tokenizer, "vocabulary", None):
        size = getattr(tokenizer, "vocabulary_size", None)
        if size is not None and max(given.ids) >= size:
            raise InvalidRequestError(f"prefix_tokens.ids holds id {max(given.ids)}, outside this vocabulary of "
                                      f"{size} tokens; send ids from the stream of the same model")
        head = request.assistant_prefix[: len(request.assistant_prefix) - len(given.text)]
        text, add_special = prompt_text(dataclasses.replace(request, assistant_prefix=head, prefix_tokens=None),
                                        template)
        return tokenizer.tokenize(text, add_special=add_special) + list(given.ids)
    text, add_special = prompt_text(request, template)
    return tokenizer.tokenize(text, add_special=add_special)


def encode_prompt(
    tokenizer: Tokenizes, request: GenerationRequest, template: ChatTemplate | None, context_length: int
) -> list[int]:
    """``prompt_ids``, refused with PromptTooLongError when it leaves no room in the context."""
    ids = prompt_ids(tokenizer, request, template)
    check_prompt_length(len(ids), context_length)
    return ids


class SequenceState:
    """The per-request part of decoding: everything between a row of logits and a TokenEvent."""

    def __init__(
        self,
        request: GenerationRequest,
        prompt_ids: Sequence[int],
        *,
        context_length: int,
        eos_token_ids: frozenset[int],
        detokenizer: Detokenizer,
        cached_tokens: int = 0,
    ) -> None:
        params = request.sampling
        room = context_length - len(prompt_ids)
        self.max_new = room if params.max_tokens is None else min(params.max_tokens, room)
        self.eos = frozenset() if params.ignore_eos else eos_token_ids
        self.prompt_tokens = len(prompt_ids)
        self.cached_tokens = cached_tokens
        self.generated = 0
        self.finish_reason: FinishReason | None = None
        self._sampler = Sampler(params)
        self._stops = StopMatcher(params.stop)
        self._detokenizer = detokenizer

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.generated, self.cached_tokens)

    def advance(self, logits: np.ndarray) -> TokenEvent:
        """Pick the next token from its (vocab,) logits; the event is the last when ``finish_reason`` is set."""
        token = self.choose(logits)
        return self.event(token, self.logprob(logits, token))

    def choose(self, logits: np.ndarray) -> int:
        """``advance``'s first half: the next token, counted as generated."""
        token = self._sampler.choose(logits)
        self.generated += 1
        return token

    def logprob(self, logits: np.ndarray, token: int) -> float:
        return self._sampler.logprob(logits, token)

    def ends_at(self, token: int) -> bool:
        """Whether the sequence ends with ``token`` (just chosen) whatever its text: EOS or the length limit.
        A stop sequence is only known from ``event``."""
        return token in self.eos or self.generated >= self.max_new

    def event(self, token: int, logprob: float) -> TokenEvent:
        """``advance``'s second half, for the token ``choose`` just returned."""
        finish: FinishReason | None = FinishReason.STOP if token in self.eos else None
        text, matched = self._stops.feed("" if finish else self._detokenizer.add(token))
        if matched:
            finish = FinishReason.STOP
        elif finish is None and self.generated >= self.max_new:
            finish = FinishReason.LENGTH
        if finish is not None and not matched:
            tail, matched = self._stops.feed(self._detokenizer.flush())
            text += tail if matched else tail + self._stops.flush()
        if finish is None:
            return TokenEvent(text, token, logprob)
        self.finish_reason = finish
        return TokenEvent(text, token, logprob, finish, self.usage)


def run_generation(
    decoder: Decoder,
    template: ChatTemplate | None,
    request: GenerationRequest,
    emit: Callable[[TokenEvent], None],
    cancelled: Callable[[], bool],
    overlap: Executor | None = None,
) -> Usage:
    """Generate until a finish condition or a cancel; returns the usage (also sent on the last event).
    ``overlap``: a single-thread executor that prepares each token's event while the next step decodes."""
    ids = encode_prompt(decoder, request, template, decoder.context_length)
    state = SequenceState(  # made before the prefill, so that the first token follows it at once
        request, ids, context_length=decoder.context_length, eos_token_ids=decoder.eos_token_ids,
        detokenizer=decoder.detokenizer(ids),
    )
    logits, state.cached_tokens = decoder.prefill(ids)
    if overlap is not None:
        _overlapped(decoder, state, logits, emit, cancelled, overlap)
        return state.usage
    while not cancelled():
        event = state.advance(logits)
        emit(event)
        if event.finish_reason is not None:
            break
        logits = decoder.decode_one_token(event.token_id)  # type: ignore[arg-type]
    return state.usage


def _overlapped(
    decoder: Decoder, state: SequenceState, logits: np.ndarray, emit: Callable[[TokenEvent], None],
    cancelled: Callable[[], bool], overlap: Executor,
) -> None:
    """``run_generation``'s loop with each token's event (after the first) made on ``overlap`` during the next
    decode step. The logits are copied first (the decoder's buffer is overwritten by that step); every event is
    emitted, in order, before this returns or raises."""
    if cancelled():
        return
    # the first token's event is made here, before the next step: handing it to the helper would add the
    # helper's wake-up (slow on a core that idled through the prefill) to the TTFT
    first = state.advance(logits)
    emit(first)
    if first.finish_reason is not None:
        return
    logits = decoder.decode_one_token(first.token_id)  # type: ignore[arg-type]
    row = np.empty_like(logits)

    def finish(token: int) -> TokenEvent:
        event = state.event(token, state.logprob(row, token))
        emit(event)
        return event

    while not cancelled():
        token = state.choose(logits)
        np.copyto(row, logits)
        pending = overlap.submit(finish, token)
        if state.ends_at(token):
            pending.result()
            return
        try:
            logits = decoder.decode_one_token(token)
        except BaseException:
            futures.wait([pending])  # this token's event goes out before the error
            raise
        if pending.result().finish_reason is not None:  # a stop sequence: the step just run is not needed
            return
