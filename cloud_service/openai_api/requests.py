"""OpenAI request bodies read into ``tandem.v1.GenerateRequest``, with a ``BadRequest`` naming the field.

Chat (``/v1/chat/completions``): ``messages`` with string content or text parts; ``system``, ``developer``
(read as system), ``user`` and ``assistant`` roles. A last assistant message is a prefill, the answer's start
(vLLM's ``continue_final_message``, or ``add_generation_prompt: false``, as llama-server reads a trailing
assistant message): it becomes ``assistant_prefix``. Completions (``/v1/completions``): one ``prompt`` string.
Both: ``model`` ("name" or "name@version"), ``max_tokens`` (``max_completion_tokens`` for chat), ``temperature``,
``top_p``, ``top_k`` and ``ignore_eos`` (vLLM's extensions), ``stop``, ``seed``, ``n`` = 1, ``stream`` and
``stream_options.include_usage``. Anything else that would change the answer (tools, ``logprobs``, ``n`` > 1,
penalties other than 0) is refused rather than silently ignored; fields that only label a call (``user``,
``metadata``) are accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cloud_service.convert import field_path
from cloud_service.errors import CloudServiceError
from cloud_service.wire.v1 import inference_pb2 as pb

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "stream", "stream_options", "model", "n",
                     "logprobs", "echo", "suffix", "best_of", "parallel_tool_calls", "continue_final_message",
                     "add_generation_prompt"})
"""Fields read elsewhere in this module or that only label the call."""
REFUSED = ("tools", "tool_choice", "functions", "function_call", "response_format", "top_logprobs", "logit_bias",
           "audio", "modalities", "prediction", "grammar", "guided_json", "guided_regex", "guided_choice")
"""Fields that would change the answer in a way these servers do not implement."""
MAX_STOP_SEQUENCES = 4


class BadRequest(CloudServiceError, ValueError):
    """The body is not a request this server can answer; ``param`` names the field (None: the whole body)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class OpenAIRequest:
    """A body read: the call to make, and how to answer it."""

    wire: pb.GenerateRequest
    model: str
    """The model as the caller named it (echoed in every response)."""
    stream: bool
    include_usage: bool
    max_tokens_param: str = "max_tokens"
    """The body's field that set ``sampling.max_tokens`` (``max_completion_tokens`` or ``max_tokens``)."""
    prefill_param: str | None = None
    """The body's field that became ``assistant_prefix`` (the last message's content), if one did."""

    def body_param(self, path: str | None) -> str | None:
        """The body's field for a GenerateRequest field path that an error names (``convert.field_path``):
        ``sampling.temperature`` -> ``temperature``, ``chat.messages[1].content`` -> ``messages[1].content``;
        None for fields no body field sets (``request_id`` is the x-request-id header, ``prefix_tokens``)."""
        if path is None:
            return None
        head, _, rest = path.partition(".")
        if head == "sampling":
            return self.max_tokens_param if rest == "max_tokens" else rest or None
        if head == "input":
            return "messages" if self.wire.HasField("chat") else "prompt"
        if head == "chat":
            element = rest.removeprefix("messages")
            return "messages" + element if element.startswith("[") and not element.startswith("[]") else "messages"
        if head == "assistant_prefix":
            return self.prefill_param
        if head in ("model", "model_version"):
            return "model"
        return "prompt" if head == "prompt" else None

    def in_body_terms(self, message: str) -> tuple[str, str | None]:
        """A call's error message as the HTTP caller should read it, and its ``param``: a message that starts
        with a GenerateRequest field path starts with the body's field instead ("sampling.top_p must lie in
        (0, 1], got 0.0" -> "top_p must lie in (0, 1], got 0.0", param "top_p")."""
        path = field_path(message)
        param = self.body_param(path)
        if path is None or param is None:
            return message, None
        return param + message[len(path):], param


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def chat_request(data: dict[str, Any], request_id: str) -> OpenAIRequest:
    """A ``/v1/chat/completions`` body as the GenerateRequest it asks for."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array of {role, content} objects", "messages")
    chat = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"{where}.role {role!r} is not one of {', '.join(ROLES)}", f"{where}.role")
        if message.get("tool_calls"):
            raise BadRequest(f"{where}.tool_calls: tool calls are not supported", f"{where}.tool_calls")
        chat.append((ROLES[role], _content(message.get("content"), f"{where}.content")))
    prefix, prefill_param = "", None
    prefill = data.get("continue_final_message") is True or data.get("add_generation_prompt") is False
    if chat[-1][0] == "assistant":
        if not prefill and data.get("add_generation_prompt") is True:
            raise BadRequest("messages: the last is the assistant's; set continue_final_message (or leave "
                             "add_generation_prompt unset) to continue it", "messages")
        prefix, prefill_param = chat.pop()[1], f"messages[{len(chat)}].content"
    elif data.get("continue_final_message") is True:
        raise BadRequest("messages: continue_final_message needs the last of them to be the assistant's", "messages")
    if not chat:
        raise BadRequest("messages holds only an assistant prefill; add the conversation before it", "messages")
    wire = _wire(data, request_id, max_tokens_field="max_completion_tokens")
    wire.chat.messages.extend(pb.ChatMessage(role=role, content=content) for role, content in chat)
    wire.assistant_prefix = prefix
    return OpenAIRequest(wire, wire_model(data), *_streaming(data), max_tokens_param=_max_tokens_param(
        data, "max_completion_tokens"), prefill_param=prefill_param)


def completion_request(data: dict[str, Any], request_id: str) -> OpenAIRequest:
    """A ``/v1/completions`` body as the GenerateRequest it asks for."""
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt must be one non-empty string (batches of prompts are not supported)", "prompt")
    for name in ("echo", "suffix"):
        if data.get(name):
            raise BadRequest(f"{name} is not supported", name)
    if data.get("best_of") not in (None, 1):
        raise BadRequest("best_of must be 1", "best_of")
    wire = _wire(data, request_id, max_tokens_field="max_tokens")
    wire.prompt = prompt
    return OpenAIRequest(wire, wire_model(data), *_streaming(data))


def _max_tokens_param(data: dict[str, Any], field: str) -> str:
    """The field ``_wire`` read the token limit from: ``field``, or ``max_tokens`` when the body lacks it."""
    return field if field in data else "max_tokens"


def wire_model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model must name a model (GET /v1/models lists them)", "model")
    return model


def split_model(model: str) -> tuple[str, str]:
    """"name@version" -> (name, version); "name" -> (name, "")."""
    name, _, version = model.partition("@")
    return name, version


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}[{index}] must be a text part ({{\"type\": \"text\", \"text\": ...}}); "
                                 "images, audio and files are not supported", f"{where}[{index}]")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"{where} must be a string or an array of text parts", where)


def _streaming(data: dict[str, Any]) -> tuple[bool, bool]:
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", "stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise BadRequest("stream_options.include_usage must be true or false", "stream_options.include_usage")
    return stream, include


def _wire(data: dict[str, Any], request_id: str, *, max_tokens_field: str) -> pb.GenerateRequest:
    for name in REFUSED:
        if data.get(name) not in (None, [], {}):
            raise BadRequest(f"{name} is not supported by this server", name)
    if data.get("logprobs") not in (None, False, 0):
        raise BadRequest("logprobs is not supported by this server", "logprobs")
    if data.get("n", 1) != 1:
        raise BadRequest("n must be 1 (one answer per request)", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if data.get(name) not in (None, 0, 0.0):
            raise BadRequest(f"{name} is not supported by this server (leave it 0)", name)
    name, version = split_model(wire_model(data))
    wire = pb.GenerateRequest(request_id=request_id, model=name, model_version=version)
    sampling = wire.sampling
    limit = data.get(max_tokens_field, data.get("max_tokens"))
    if limit is not None:
        # the server caps it at limits.max_tokens; the wire field is 32 bits
        sampling.max_tokens = min(_integer(limit, _max_tokens_param(data, max_tokens_field), 1), 2**32 - 1)
    if (value := _number(data, "temperature", 0.0, 2.0)) is not None:
        sampling.temperature = value
    if (value := _number(data, "top_p", 0.0, 1.0)) is not None:
        sampling.top_p = value
    if data.get("top_k") is not None:
        top_k = _integer(data["top_k"], "top_k", -1)
        sampling.top_k = max(0, top_k)  # vLLM reads -1 as "no top-k", as 0 is here
    if data.get("seed") is not None:
        sampling.seed = _integer(data["seed"], "seed", 0) % 2**64
    if data.get("ignore_eos") is not None:
        if not isinstance(data["ignore_eos"], bool):
            raise BadRequest("ignore_eos must be true or false", "ignore_eos")
        sampling.ignore_eos = data["ignore_eos"]
    stop = data.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise BadRequest("stop must be a string or an array of non-empty strings", "stop")
        if len(stop) > MAX_STOP_SEQUENCES:
            raise BadRequest(f"stop holds {len(stop)} sequences; at most {MAX_STOP_SEQUENCES}", "stop")
        sampling.stop.extend(stop)
    return wire


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}, got {value!r}", name)
    return value


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, got {value!r}", name)
    return float(value)


__all__ = ["BadRequest", "OpenAIRequest", "chat_request", "completion_request", "parse_json", "split_model"]
