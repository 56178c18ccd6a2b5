"""API keys per tenant: stored as sha256 digests, compared in constant time, checked by a server interceptor.

Clients send ``authorization: Bearer <key>``. The interceptor answers UNAUTHENTICATED for a missing or
unknown key; otherwise it runs the method with ``current_tenant`` set, and the servicer answers
PERMISSION_DENIED when the request names another tenant or a model the tenant may not use. Health checks and
reflection need no key (load balancers and probes call them).
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


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyRing | None) -> None:
        """``keys`` None: authentication is off (``allow_unauthenticated``), every call runs as no tenant."""
        self.keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if self.keys is None or handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        key = bearer_key(details.invocation_metadata)
        tenant = self.keys.tenant_for(key) if key else None
        if tenant is None:
            reason = "unknown API key" if key else f"missing API key: send '{AUTH_METADATA}: Bearer <key>'"
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, reason)
        return _as_tenant(handler, tenant)


def _as_tenant(handler: grpc.RpcMethodHandler, tenant: TenantConfig) -> grpc.RpcMethodHandler:
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = current_tenant.set(tenant)
            try:
                async for item in inner_stream(request, context):
                    yield item
            finally:
                current_tenant.reset(token)

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )
    inner_unary = handler.unary_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = current_tenant.set(tenant)
        try:
            return await inner_unary(request, context)
        finally:
            current_tenant.reset(token)

    return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.unary_stream:
        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(code, message)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(
            refuse_stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
