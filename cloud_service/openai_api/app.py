"""The Starlette app: OpenAI's routes, each transcoded into a ``tandem.v1.Inference`` call on the server's
own gRPC port (see the package docstring).

    POST /v1/chat/completions    chat, streamed as server-sent events (``data: {...}`` ... ``data: [DONE]``)
                                 or answered whole
    POST /v1/completions         a raw prompt, the same two ways
    GET  /v1/models              the models served ("name" and "name@version")
    GET  /health                 200 while serving, 503 while draining (no key needed: for load balancers)

An error before the first token is an HTTP status with OpenAI's error body (``responses.status_error``); an
INVALID_ARGUMENT that names a GenerateRequest field (``sampling.temperature``, ``chat.messages[1].content``)
names the body's field instead, in the message and in ``param`` (``temperature``, ``messages[1].content``). An
error after the first token, when the answer is streamed, is a last ``data: {"error": ...}`` event that says
how many tokens were delivered, then ``data: [DONE]``. A caller that disconnects cancels the call (the engine's
slot frees, the tokens generated are charged).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloud_service.channel import trailing_value
from cloud_service.errors import DELIVERED_METADATA, RETRY_AFTER_METADATA
from cloud_service.openai_api.requests import BadRequest, OpenAIRequest, chat_request, completion_request, parse_json
from cloud_service.openai_api.responses import Answer, error_body, models_list, retry_headers, status_error
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc

REQUEST_ID_HEADER = "x-request-id"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""Proxies must pass each event on at once (nginx buffers responses unless told not to)."""


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _rpc_status(exc: grpc.aio.AioRpcError, asked: OpenAIRequest | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error body of a failed call. An INVALID_ARGUMENT names the GenerateRequest field
    (``sampling.temperature``); the caller reads the body's field instead (``temperature``, in message and
    ``param``)."""
    message, param = exc.details() or "", None
    if asked is not None and exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        message, param = asked.in_body_terms(message)
    return status_error(exc.code(), message, param)


def _rpc_error(exc: grpc.aio.AioRpcError, asked: OpenAIRequest | None = None) -> JSONResponse:
    status, body = _rpc_status(exc, asked)
    headers = retry_headers(trailing_value(exc.trailing_metadata(), RETRY_AFTER_METADATA)) if status == 429 else {}
    return _json(body, status, headers)


def _event(body: dict[str, Any] | str) -> bytes:
    return b"data: " + (body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))).encode() + b"\n\n"


class OpenAIApp:
    """The routes over a gRPC channel to the server's own Inference service."""

    def __init__(self, channel: grpc.aio.Channel, *, max_body_bytes: int, draining: Callable[[], bool]) -> None:
        self.stub = inference_pb2_grpc.InferenceStub(channel)
        self.max_body_bytes = max_body_bytes
        self.draining = draining
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ])

    # -- routes --------------------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat_request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, completion_request, "text")

    async def models(self, request: Request) -> Response:
        metadata = self._metadata(request)
        if isinstance(metadata, Response):
            return metadata
        try:
            listed = await self.stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return _rpc_error(exc)
        return _json(models_list(listed.models))

    async def health(self, request: Request) -> Response:
        if self.draining():
            return _json({"status": "draining"}, 503)
        return _json({"status": "ok"})

    # -- generation ----------------------------------------------------------------------------------------

    async def _generate(self, request: Request, parse: Callable[[dict[str, Any], str], OpenAIRequest],
                        kind: str) -> Response:
        metadata = self._metadata(request)
        if isinstance(metadata, Response):
            return metadata
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            asked = parse(parse_json(body), request_id)
        except BadRequest as exc:
            return _json(error_body(str(exc), "invalid_request_error", "invalid_request", exc.param), 400)
        call = self.stub.Generate(asked.wire, metadata=metadata)
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            return _rpc_error(exc, asked)
        answer = Answer(kind, request_id, asked.model)
        if not asked.stream:
            return await self._whole(call, first, answer, asked)
        return StreamingResponse(self._events(call, first, answer, asked),
                                 media_type="text/event-stream", headers={**SSE_HEADERS, REQUEST_ID_HEADER: request_id})

    async def _whole(self, call: Any, chunk: Any, answer: Answer, asked: OpenAIRequest) -> Response:
        try:
            while chunk is not grpc.aio.EOF:
                answer.add(chunk)
                chunk = await call.read()
        except grpc.aio.AioRpcError as exc:
            return _rpc_error(exc, asked)
        finally:
            call.cancel()
        return _json(answer.whole())

    async def _events(self, call: Any, chunk: Any, answer: Answer, asked: OpenAIRequest) -> AsyncIterator[bytes]:
        first, usage = True, None
        try:
            while chunk is not grpc.aio.EOF:
                if chunk.HasField("usage"):
                    usage = chunk.usage
                event = answer.delta(chunk, first=first)
                if event is not None:
                    first = False
                    yield _event(event)
                chunk = await call.read()
            if asked.include_usage and usage is not None:
                yield _event(answer.usage_chunk(usage))
        except grpc.aio.AioRpcError as exc:
            _, body = _rpc_status(exc, asked)
            delivered = trailing_value(exc.trailing_metadata(), DELIVERED_METADATA)
            if delivered is not None:
                body["error"]["delivered_tokens"] = int(delivered)
            yield _event(body)
        finally:
            call.cancel()  # no-op when it ended; a caller that left frees the engine's slot
        yield _event("[DONE]")

    # -- request parts -------------------------------------------------------------------------------------

    def _metadata(self, request: Request) -> tuple[tuple[str, str], ...] | Response:
        """The caller's Authorization header as the gRPC call's metadata (the front door reads the key)."""
        auth = request.headers.get("authorization")
        if auth is None:
            return ()
        if not auth.isascii() or not auth.isprintable():
            return _json(error_body("the Authorization header must be 'Bearer <key>' in ASCII", "authentication_error",
                                    "invalid_api_key"), 401)
        return (("authorization", auth),)

    async def _body(self, request: Request) -> bytes | Response:
        """The body, read up to ``max_body_bytes`` (413 beyond: a request that size is refused anyway)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return self._too_large()
        chunks, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > self.max_body_bytes:
                return self._too_large()
            chunks.append(part)
        return b"".join(chunks)

    def _too_large(self) -> Response:
        return _json(error_body(f"the body is over {self.max_body_bytes} bytes (limits.max_message_bytes)",
                                "invalid_request_error", "request_too_large"), 413)


__all__ = ["OpenAIApp"]
