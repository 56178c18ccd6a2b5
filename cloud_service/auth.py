"""API keys per tenant: stored as sha256 digests, compared in constant time, checked by a server interceptor.

Clients send ``authorization: Bearer <key>`` (the scheme in any case, as RFC 7235 allows). The interceptor
runs before the request body is decoded: a missing or unknown key is UNAUTHENTICATED whatever the body holds;
with a valid key (or with authentication off) a body that does not parse as the method's message is
INVALID_ARGUMENT with a plain message. Otherwise it runs the method with ``current_tenant`` set, and the
servicer answers PERMISSION_DENIED when the request names another tenant or a model the tenant may not use.
Health checks and reflection need no key (load balancers and probes call them). Each refusal made here is
reported to ``on_refusal`` (the server's metrics) with the method and its status.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from cloud_service.channel import AUTH_METADATA, bearer_key
from cloud_service.front_door.config import TenantConfig

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Method prefixes that need no API key."""

current_tenant: contextvars.ContextVar[TenantConfig | None] = contextvars.ContextVar("tandem_tenant", default=None)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh API key (256 random bits, URL-safe)."""
    return "tdm_" + secrets.token_urlsafe(32)


class KeyRing:
    def __init__(self, tenants: Iterable[TenantConfig]) -> None:
        self._tenants = list(tenants)

    def tenant_for(self, key: str) -> TenantConfig | None:
        """The tenant whose key this is; every digest is compared (in constant time) so timing tells nothing."""
        digest = hash_key(key).encode()
        found = None
        for tenant in self._tenants:
            if hmac.compare_digest(digest, tenant.key_sha256.encode()):
                found = tenant
        return found


RefusalSink = Callable[[str, grpc.StatusCode], None]
"""Told (method, status) of each call the interceptor refuses."""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyRing | None, on_refusal: RefusalSink | None = None) -> None:
        """``keys`` None: authentication is off (``allow_unauthenticated``), every call runs as no tenant."""
        self.keys = keys
        self.on_refusal = on_refusal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES) or handler.request_streaming:
            return handler
        method = details.method
        tenant = None
        if self.keys is not None:
            key = bearer_key(details.invocation_metadata)
            tenant = self.keys.tenant_for(key) if key else None
            if tenant is None:
                reason = "unknown API key" if key else f"missing API key: send '{AUTH_METADATA}: Bearer <key>'"
                self._refused(method, grpc.StatusCode.UNAUTHENTICATED)
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, reason)
        return _as_tenant(handler, tenant, lambda: self._refused(method, grpc.StatusCode.INVALID_ARGUMENT))

    def _refused(self, method: str, code: grpc.StatusCode) -> None:
        if self.on_refusal is not None:
            self.on_refusal(method, code)


class _BadBody(Exception):
    pass


def _parser(handler: grpc.RpcMethodHandler) -> Callable[[bytes], Any]:
    """The handler's own deserializer, run inside the method (so a key is checked first) and raising
    ``_BadBody`` with a plain message when the bytes are not the method's message."""
    deserialize = handler.request_deserializer
    message = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = message.full_name if message is not None else "request"

    def parse(raw: bytes) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception as exc:  # protobuf's DecodeError, or a field that is not valid UTF-8
            raise _BadBody(f"the request body is not a valid {name} message ({exc}); send {name} serialized "
                           f"as protos/tandem/v1 defines it") from None

    return parse


def _as_tenant(handler: grpc.RpcMethodHandler, tenant: TenantConfig | None,
               bad_body: Callable[[], None]) -> grpc.RpcMethodHandler:
    """The handler taking raw bytes: it parses them (INVALID_ARGUMENT when they do not parse), then runs the
    method with ``current_tenant`` set."""
    parse = _parser(handler)
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        async def stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except _BadBody as exc:
                bad_body()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            token = current_tenant.set(tenant)
            try:
                async for item in inner_stream(request, context):
                    yield item
            finally:
                current_tenant.reset(token)

        return grpc.unary_stream_rpc_method_handler(stream, None, handler.response_serializer)
    inner_unary = handler.unary_unary

    async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(raw)
        except _BadBody as exc:
            bad_body()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        token = current_tenant.set(tenant)
        try:
            return await inner_unary(request, context)
        finally:
            current_tenant.reset(token)

    return grpc.unary_unary_rpc_method_handler(unary, None, handler.response_serializer)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler that refuses with ``code`` and never decodes the body."""
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.unary_stream:
        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(code, message)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(refuse_stream, None, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, None, handler.response_serializer)
