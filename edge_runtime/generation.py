"""One request's decode loop over a Decoder: prompt -> prefill -> (pick, detokenize, stop?, decode_one_token)*.

Runs on the engine's worker thread; ``emit`` hands each TokenEvent to the caller's event loop and
``cancelled`` is polled before every token, so a cancel takes effect within one decode step.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.chat import ChatTemplate, prompt_text
from edge_runtime.decoder import Decoder
from edge_runtime.errors import PromptTooLongError
from edge_runtime.sampling import Sampler
from edge_runtime.stops import StopMatcher
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage


def encode_prompt(decoder: Decoder, request: GenerationRequest, template: ChatTemplate | None) -> list[int]:
    text, add_special = prompt_text(request, template)
    ids = decoder.tokenize(text, add_special=add_special)
    if len(ids) >= decoder.context_length:
        raise PromptTooLongError(
            f"the prompt is {len(ids)} tokens; this engine's context holds {decoder.context_length}, leaving no "
            "room to generate: shorten the prompt or send it to a model with a longer context",
            prompt_tokens=len(ids),
            context_length=decoder.context_length,
        )
    return ids


def run_generation(
    decoder: Decoder,
    template: ChatTemplate | None,
    request: GenerationRequest,
    emit: Callable[[TokenEvent], None],
    cancelled: Callable[[], bool],
) -> Usage:
    """Generate until a finish condition or a cancel; returns the usage (also sent on the last event)."""
    prompt_ids = encode_prompt(decoder, request, template)
    params = request.sampling
    room = decoder.context_length - len(prompt_ids)
    max_new = room if params.max_tokens is None else min(params.max_tokens, room)
    eos = frozenset() if params.ignore_eos else decoder.eos_token_ids
    sampler, stops, detokenizer = Sampler(params), StopMatcher(params.stop), decoder.detokenizer(prompt_ids)

    logits, cached = decoder.prefill(prompt_ids)
    generated = 0
    while True:
        if cancelled():
            return Usage(len(prompt_ids), generated, cached)
        token, logprob = sampler.pick(logits)
        generated += 1
        finish: FinishReason | None = FinishReason.STOP if token in eos else None
        text, matched = stops.feed("" if finish else detokenizer.add(token))
        if matched:
            finish = FinishReason.STOP
        elif finish is None and generated >= max_new:
            finish = FinishReason.LENGTH
        if finish is not None and not matched:
            tail, matched = stops.feed(detokenizer.flush())
            text += tail if matched else tail + stops.flush()
        if finish is not None:
            usage = Usage(len(prompt_ids), generated, cached)
            emit(TokenEvent(text, token, logprob, finish, usage))
            return usage
        emit(TokenEvent(text, token, logprob))
        logits = decoder.decode_one_token(token)
