"""OpenAI's response objects and error bodies, from the chunks and statuses of ``tandem.v1.Inference``.

Statuses map to what OpenAI clients expect: UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
INVALID_ARGUMENT 400, RESOURCE_EXHAUSTED 429 (with ``retry-after`` in seconds and ``retry-after-ms``),
UNAVAILABLE 503, DEADLINE_EXCEEDED 504, ALREADY_EXISTS 409, anything else 500. The body is always
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import grpc

from cloud_service.wire.v1 import inference_pb2 as pb

FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_ABORT: "abort"}
_ERRORS: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_request"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error", "permission_denied"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error", "model_not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error", "conflict"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable_error", "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error", "timeout"),
}


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def status_error(code: grpc.StatusCode, message: str, param: str | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body for a call that ended with ``code``; ``param`` names the body's field."""
    status, kind, name = _ERRORS.get(code, (500, "server_error", "internal_error"))
    return status, error_body(message or code.name, kind, name, param)


def retry_headers(retry_after_ms: str | None) -> dict[str, str]:
    """``retry-after`` (whole seconds, rounded up, as HTTP has it) and ``retry-after-ms`` for a 429."""
    if not retry_after_ms:
        return {}
    milliseconds = int(retry_after_ms)
    return {"retry-after": str(max(1, math.ceil(milliseconds / 1000))), "retry-after-ms": str(milliseconds)}


def usage(wire: pb.Usage) -> dict[str, Any]:
    return {"prompt_tokens": wire.prompt_tokens, "completion_tokens": wire.completion_tokens,
            "total_tokens": wire.prompt_tokens + wire.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": wire.cached_tokens}}


class Answer:
    """The objects of one answer (chat or text completion), in OpenAI's shapes."""

    def __init__(self, kind: str, request_id: str, model: str, created: int | None = None) -> None:
        """``kind``: "chat" or "text"."""
        self.chat = kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + request_id
        self.model = model
        self.created = created if created is not None else int(time.time())
        self.text: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def add(self, chunk: pb.GenerateChunk) -> None:
        """A chunk of the answer (for the whole-answer response)."""
        self.text.append(chunk.text)
        if chunk.finish_reason:
            self.finish = FINISH.get(chunk.finish_reason, "stop")
        if chunk.HasField("usage"):
            self.usage = usage(chunk.usage)

    def delta(self, chunk: pb.GenerateChunk, *, first: bool) -> dict[str, Any] | None:
        """The streamed object for a chunk (None when it carries nothing to send)."""
        finish = FINISH.get(chunk.finish_reason, "stop") if chunk.finish_reason else None
        if not chunk.text and finish is None and not first:
            return None
        if self.chat:
            delta: dict[str, Any] = {"content": chunk.text}
            if first:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return self._object("chat.completion.chunk", [choice])
        return self._object("text_completion", [{"index": 0, "text": chunk.text, "logprobs": None,
                                                 "finish_reason": finish}])

    def usage_chunk(self, wire: pb.Usage) -> dict[str, Any]:
        """The last streamed object when the caller asked for usage: no choices, the whole answer's usage."""
        body = self._object("chat.completion.chunk" if self.chat else "text_completion", [])
        body["usage"] = usage(wire)
        return body

    def whole(self) -> dict[str, Any]:
        """The non-streamed response."""
        text = "".join(self.text)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": self.finish or "stop"}
            body = self._object("chat.completion", [choice])
        else:
            body = self._object("text_completion", [{"index": 0, "text": text, "logprobs": None,
                                                     "finish_reason": self.finish or "stop"}])
        body["usage"] = self.usage
        return body


def models_list(models: Iterable[pb.ModelInfo], created: int = 0) -> dict[str, Any]:
    """``GET /v1/models``: each model once by name, and each version as "name@version"."""
    data, seen = [], set()
    for info in models:
        for ident in (info.name, f"{info.name}@{info.version}" if info.version else None):
            if ident and ident not in seen:
                seen.add(ident)
                data.append({"id": ident, "object": "model", "created": created, "owned_by": "tandem",
                             "max_model_len": info.max_context})
    return {"object": "list", "data": data}


__all__ = ["Answer", "error_body", "models_list", "retry_headers", "status_error", "usage"]
