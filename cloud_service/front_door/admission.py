"""The checks every Generate call passes at a front door, and the calls in flight there.

    caller = await admission.check(wire, context)     # draining, tenant and model permission, size, request id
    ...                                                # the server's own checks (a replica: model, fields)
    key = await admission.admit(caller, wire, context) # not already running, within the tenant's quota
    admission.inflight[key] = work                     # until admission.release(caller, key, tokens)

Each check refuses with its own status: draining -> UNAVAILABLE with ``tandem-draining``; the request naming
another tenant than its key's, or a model the tenant may not use -> PERMISSION_DENIED; a request over
``limits.max_message_bytes`` or without a request id -> INVALID_ARGUMENT; an id the tenant already has
running -> ALREADY_EXISTS; over the tenant's quota -> RESOURCE_EXHAUSTED with ``retry-after-ms``. A request
is charged one request on admission and its tokens on release (``cloud_service.quota``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

import grpc

from cloud_service.auth import current_tenant
from cloud_service.errors import DRAINING_METADATA, RETRY_AFTER_METADATA
from cloud_service.front_door.config import Limits, TenantConfig
from cloud_service.quota import Quotas
from cloud_service.wire.v1 import inference_pb2 as pb

T = TypeVar("T")
CallKey = tuple[str, str]
"""(tenant name, request id): a call in flight, unique per tenant."""


async def refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str,
                 trailers: Sequence[tuple[str, str]] = ()) -> NoReturn:
    """End the call with ``code`` and ``message``, sending ``trailers`` as trailing metadata."""
    if trailers:
        context.set_trailing_metadata(tuple(trailers))
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def refused_status(context: grpc.aio.ServicerContext) -> str:
    """The status name a call that was just refused (``refuse``, ``context.abort``) ends with."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def left_status(context: grpc.aio.ServicerContext) -> str:
    """The status name of a call whose caller left: DEADLINE_EXCEEDED when its deadline passed, else CANCELLED."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


def retry_after_ms(seconds: float) -> str:
    """The ``retry-after-ms`` value for a wait of ``seconds`` (rounded up, never 0)."""
    return str(int(seconds * 1000) + 1)


@dataclass(frozen=True)
class Caller:
    """Who a call runs for: the tenant of its API key (None when authentication is off) and the tenant name
    it is known by (the key's tenant, or the name the request gives when there is no key)."""

    tenant: TenantConfig | None
    name: str


class Admission(Generic[T]):
    """The front door's checks (see the module docstring) and its calls in flight, ``inflight``: whatever the
    server keeps per call (a replica its model, the gateway its flight), by ``CallKey``."""

    def __init__(self, limits: Limits, quotas: Quotas | None = None, *, server: str) -> None:
        """``server`` names this front door in refusals ("replica", "gateway")."""
        self.limits = limits
        self.quotas = quotas or Quotas()
        self.server = server
        self.draining = False
        """Set by the listener's drain: new calls are refused with UNAVAILABLE from then on."""
        self.inflight: dict[CallKey, T] = {}

    async def caller(self, tenant_field: str, context: grpc.aio.ServicerContext) -> Caller:
        """The caller of a request whose ``tenant`` field is ``tenant_field``: PERMISSION_DENIED when that
        names another tenant than the API key's."""
        tenant = current_tenant.get()
        if tenant is None:
            return Caller(None, tenant_field)
        if tenant_field and tenant_field != tenant.name:
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"this API key belongs to tenant {tenant.name!r}, not {tenant_field!r}")
        return Caller(tenant, tenant.name)

    async def check(self, wire: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> Caller:
        """Draining, tenant and model permission, request size and id; the caller when all pass."""
        if self.draining:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"this {self.server} is draining; retry on another",
                         ((DRAINING_METADATA, "1"),))
        caller = await self.caller(wire.tenant, context)
        if caller.tenant is not None and not caller.tenant.may_use(wire.model):
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"tenant {caller.name!r} may not use model {wire.model!r}")
        size, limit = wire.ByteSize(), self.limits.max_message_bytes
        if size > limit:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"the request is {size} bytes; this "
                         f"{self.server} accepts at most {limit} (limits.max_message_bytes)")
        if not wire.request_id:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         "request_id is empty; give each request an id (Abort takes it)")
        return caller

    async def admit(self, caller: Caller, wire: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> CallKey:
        """Refuse an id the caller already has running, then charge one request of the caller's quota (or
        refuse with the wait); the call's key."""
        key = (caller.name, wire.request_id)
        if key in self.inflight:
            await refuse(context, grpc.StatusCode.ALREADY_EXISTS,
                         f"request_id {wire.request_id!r} is already running for this tenant")
        if caller.tenant is not None:
            wait = self.quotas.admit(caller.tenant)
            if wait > 0:
                await refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"tenant {caller.name!r} is over its quota; retry in {wait:.1f} s",
                             ((RETRY_AFTER_METADATA, retry_after_ms(wait)),))
        return key

    def release(self, caller: Caller, key: CallKey, tokens: int) -> None:
        """The call ended: it leaves ``inflight`` and its tokens are charged to the caller's quota."""
        self.inflight.pop(key, None)
        if caller.tenant is not None:
            self.quotas.charge_tokens(caller.tenant, tokens)


__all__ = ["Admission", "CallKey", "Caller", "left_status", "refuse", "refused_status", "retry_after_ms"]
