"""Between the wire (tandem.v1 messages) and the Engine types of ``edge_runtime``, both ways.

Invalid requests raise ``edge_runtime.errors.InvalidRequestError`` whose message starts with the field's path in
GenerateRequest (``sampling.temperature``, ``chat.messages[2].role``; the server answers INVALID_ARGUMENT with
that message); ``field_path`` reads that path back from a message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cloud_service.wire.v1 import inference_pb2 as pb
from edge_runtime.errors import InvalidRequestError
from edge_runtime.types import (
    FinishReason,
    GenerationRequest,
    PrefixTokens,
    SamplingParams,
    TokenEvent,
    Usage,
    chat_messages,
)

_FINISH_TO_WIRE = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.ABORT: pb.FINISH_REASON_ABORT,
}
_FINISH_FROM_WIRE = {wire: reason for reason, wire in _FINISH_TO_WIRE.items()}
_PATH = re.compile(r"([a-z_]+(?:\[\d*\])?(?:\.[a-z_]+(?:\[\d*\])?)*)(?=[\s:;,]|$)")
_REQUEST_FIELDS = frozenset({*pb.GenerateRequest.DESCRIPTOR.fields_by_name, "input"})


def field_path(message: str) -> str | None:
    """The GenerateRequest field path an error message starts with ("sampling.top_p must lie in (0, 1], got 0.0"
    -> "sampling.top_p"); None when it starts with no field of the request."""
    match = _PATH.match(message)
    if match is None or match.group(1).partition(".")[0].partition("[")[0] not in _REQUEST_FIELDS:
        return None
    return match.group(1)


def sampling_from_wire(wire: pb.SamplingParams, max_tokens_limit: int) -> SamplingParams:
    """Unset fields take the defaults; max_tokens is capped at the server's limit (and defaults to it)."""
    requested = wire.max_tokens if wire.HasField("max_tokens") else max_tokens_limit
    if wire.HasField("max_tokens") and requested == 0:
        raise InvalidRequestError("sampling.max_tokens must be >= 1, got 0 (leave it unset for the server's limit)")
    return SamplingParams(
        temperature=wire.temperature if wire.HasField("temperature") else 1.0,
        top_p=wire.top_p if wire.HasField("top_p") else 1.0,
        top_k=wire.top_k if wire.HasField("top_k") else 0,
        max_tokens=min(requested, max_tokens_limit),
        stop=tuple(wire.stop),
        seed=wire.seed if wire.HasField("seed") else None,
        ignore_eos=wire.ignore_eos,
    )


def request_from_wire(wire: pb.GenerateRequest, *, engine_request_id: str, max_tokens_limit: int) -> GenerationRequest:
    if not wire.request_id:
        raise InvalidRequestError("request_id is empty; give each request an id (Abort takes it)")
    kind = wire.WhichOneof("input")
    if kind is None:
        raise InvalidRequestError("input is empty: set chat.messages or prompt")
    messages = None
    if kind == "chat":  # an empty list is refused by GenerationRequest, as in-process
        messages = chat_messages((m.role, m.content) for m in wire.chat.messages)
    return GenerationRequest(
        messages=messages,
        prompt=wire.prompt if kind == "prompt" else None,
        sampling=sampling_from_wire(wire.sampling, max_tokens_limit),
        assistant_prefix=wire.assistant_prefix,
        request_id=engine_request_id,
        prefix_tokens=_prefix_tokens_from_wire(wire),
    )


def _prefix_tokens_from_wire(wire: pb.GenerateRequest) -> PrefixTokens | None:
    if not wire.HasField("prefix_tokens"):
        return None
    given = wire.prefix_tokens  # GenerationRequest checks that its text ends assistant_prefix
    return PrefixTokens(given.vocabulary, tuple(given.ids), given.text)


def request_to_wire(request: GenerationRequest, *, model: str, model_version: str = "", tenant: str = "",
                    request_id: str | None = None) -> pb.GenerateRequest:
    params = request.sampling
    sampling = pb.SamplingParams(
        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, stop=list(params.stop),
        ignore_eos=params.ignore_eos,
    )
    if params.max_tokens is not None:
        sampling.max_tokens = params.max_tokens
    if params.seed is not None:
        sampling.seed = params.seed
    wire = pb.GenerateRequest(
        request_id=request_id or request.request_id, model=model, model_version=model_version, tenant=tenant,
        assistant_prefix=request.assistant_prefix, sampling=sampling,
    )
    if request.prefix_tokens is not None:
        given = request.prefix_tokens
        wire.prefix_tokens.CopyFrom(pb.PrefixTokens(vocabulary=given.vocabulary, ids=given.ids, text=given.text))
    if request.messages is not None:
        wire.chat.messages.extend(pb.ChatMessage(role=m.role, content=m.content) for m in request.messages)
    else:
        wire.prompt = request.prompt or ""
    return wire


def chunk_from_events(events: Sequence[TokenEvent], model_version: str = "", vocabulary: str = "") -> pb.GenerateChunk:
    """One chunk for consecutive events: their text joined, every token with its logprob, the last one's finish
    reason and usage (the first chunk of a stream also names the model version and vocabulary)."""
    chunk = pb.GenerateChunk(text="".join(e.text for e in events), model_version=model_version,
                             vocabulary=vocabulary)
    for event in events:
        if event.token_id is not None and event.logprob is not None:
            chunk.token_ids.append(event.token_id)
            chunk.logprobs.append(event.logprob)
            chunk.unreleased_tokens = 0 if event.text else chunk.unreleased_tokens + 1
        elif event.text:  # text with no token (flushed at the end): every token before it is released
            chunk.unreleased_tokens = 0
    last = events[-1]
    if last.finish_reason is not None:
        chunk.finish_reason = _FINISH_TO_WIRE[last.finish_reason]
    if last.usage is not None:
        chunk.usage.CopyFrom(pb.Usage(
            prompt_tokens=last.usage.prompt_tokens, completion_tokens=last.usage.completion_tokens,
            cached_tokens=last.usage.cached_tokens,
        ))
    return chunk


def events_from_chunk(chunk: pb.GenerateChunk) -> list[TokenEvent]:
    """One TokenEvent per token, the chunk's text on the last token that released text (the ``unreleased_tokens``
    after it carry none, as they did on the server); a token-less chunk gives one event."""
    finish = _FINISH_FROM_WIRE.get(chunk.finish_reason)
    usage = None
    if chunk.HasField("usage"):
        usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.cached_tokens)
    pairs = list(zip(chunk.token_ids, chunk.logprobs, strict=False)) or [(None, None)]
    holder = max(0, len(pairs) - 1 - chunk.unreleased_tokens) if chunk.text else len(pairs) - 1
    events = [TokenEvent(chunk.text if index == holder else "", token, logprob)
              for index, (token, logprob) in enumerate(pairs[:-1])]
    token, logprob = pairs[-1]
    events.append(TokenEvent(chunk.text if holder == len(pairs) - 1 else "", token, logprob, finish, usage))
    return events
