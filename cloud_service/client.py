"""The Python client of a replica or the gateway: async streaming with deadlines and typed errors.

    async with CloudClient("127.0.0.1:50051", api_key=key) as cloud:
        async for event in cloud.generate(request, model="assistant", timeout=30):
            print(event.text, end="")

``generate`` yields the edge runtime's ``TokenEvent`` (the SDK sees one shape for both sides). Every gRPC
failure becomes a ``cloud_service.errors`` class (``from`` the RpcError); a failure after tokens arrived is a
``StreamInterruptedError`` carrying how many were delivered. Leaving the stream early cancels the call,
which cancels the request on the server. Imports no ML library: devices use it with the ``edge`` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import grpc

from cloud_service.channel import ClientTls, bearer_metadata, open_channel, trailing_value
from cloud_service.convert import events_from_chunk, request_to_wire
from cloud_service.errors import (
    DELIVERED_METADATA,
    DRAINING_METADATA,
    RETRY_AFTER_METADATA,
    AuthenticationError,
    CloudDrainingError,
    CloudError,
    CloudInternalError,
    CloudTimeoutError,
    CloudUnavailableError,
    InvalidArgumentError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    StreamInterruptedError,
)
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc
from edge_runtime.types import GenerationRequest, TokenEvent

DEFAULT_TIMEOUT_S = 60.0


def error_from_rpc(exc: grpc.aio.AioRpcError) -> CloudError:
    """The typed error for a failed call (the gRPC status decides the class, never the message text)."""
    code, details = exc.code(), exc.details() or exc.code().name
    if code == grpc.StatusCode.UNAVAILABLE:
        draining = trailing_value(exc.trailing_metadata(), DRAINING_METADATA)
        return (CloudDrainingError if draining else CloudUnavailableError)(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CloudTimeoutError(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_ms = trailing_value(exc.trailing_metadata(), RETRY_AFTER_METADATA)
        return RateLimitedError(details, float(retry_ms) / 1000 if retry_ms else None)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDeniedError(details)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE):
        return InvalidArgumentError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFoundError(details)
    if code == grpc.StatusCode.CANCELLED:
        return CloudUnavailableError(f"the call was cancelled: {details}")
    return CloudInternalError(details)


class CloudClient:
    def __init__(self, target: str, *, api_key: str | None = None, tls: ClientTls | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, tenant: str = "") -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.tenant = tenant
        self._metadata = bearer_metadata(api_key)
        self.channel = open_channel(target, tls)
        self._stub = inference_pb2_grpc.InferenceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata (the API key) for other services on ``channel``, e.g. ModelDistribution."""
        return self._metadata

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def generate(self, request: GenerationRequest, *, model: str, model_version: str = "",
                       timeout: float | None = None,
                       on_serving: Callable[[str, str], None] | None = None) -> AsyncIterator[TokenEvent]:
        """Stream the answer; ``timeout`` (seconds, default the client's) is the whole call's deadline.
        ``on_serving(model_version, vocabulary)`` is called when the first chunk names them (the vocabulary's
        fingerprint says which engines can continue from this stream's token ids)."""
        wire = request_to_wire(request, model=model, model_version=model_version, tenant=self.tenant)
        call = self._stub.Generate(wire, timeout=timeout or self.timeout_s, metadata=self._metadata)
        delivered = 0
        try:
            async for chunk in call:
                if (chunk.model_version or chunk.vocabulary) and on_serving is not None:
                    on_serving(chunk.model_version, chunk.vocabulary)
                for event in events_from_chunk(chunk):
                    delivered += event.token_id is not None
                    yield event
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            told = trailing_value(exc.trailing_metadata(), DELIVERED_METADATA)
            if delivered or told:
                raise StreamInterruptedError(
                    f"the stream broke after {delivered} tokens: {error}", delivered, error
                ) from exc
            raise error from exc
        finally:
            call.cancel()

    async def abort(self, request_id: str, *, timeout: float | None = None) -> bool:
        response = await self._unary(self._stub.Abort, pb.AbortRequest(request_id=request_id, tenant=self.tenant),
                                     timeout)
        return response.aborted

    async def get_load(self, *, timeout: float | None = None) -> pb.LoadReport:
        return await self._unary(self._stub.GetLoad, pb.GetLoadRequest(), timeout)

    async def list_models(self, *, timeout: float | None = None) -> list[pb.ModelInfo]:
        return list((await self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout)).models)

    async def health(self, service: str = "", *, timeout: float | None = None) -> bool:
        """True when the server reports ``service`` ("" = the process) SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        response = await self._unary(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def _unary(self, method: Any, message: Any, timeout: float | None) -> Any:
        try:
            return await method(message, timeout=timeout or self.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc


__all__ = ["DEFAULT_TIMEOUT_S", "ClientTls", "CloudClient", "error_from_rpc"]
