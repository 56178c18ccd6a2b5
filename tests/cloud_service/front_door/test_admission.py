"""The front door's checks, in order, each with its status, message and trailers, the same at a replica and
at the gateway (only the server's name in the message differs)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from cloud_service.auth import current_tenant, hash_key
from cloud_service.front_door.admission import Admission, Caller, retry_after_ms
from cloud_service.front_door.config import Limits, TenantConfig
from cloud_service.wire.v1 import inference_pb2 as pb

ACME = TenantConfig("acme", hash_key("tdm_acme"), requests_per_minute=1, models=("assistant",))


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[Any, ...]) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, dict(trailers)


class Context:
    """What the checks use of a grpc.aio.ServicerContext."""

    trailers: tuple[Any, ...] = ()

    def set_trailing_metadata(self, trailers: tuple[Any, ...]) -> None:
        self.trailers = trailers

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Refused(code, message, self.trailers)


def _request(**fields: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(**({"request_id": "r1", "model": "assistant", "prompt": "hi"} | fields))


def _admit(admission: Admission[Any], wire: pb.GenerateRequest, tenant: TenantConfig | None = ACME) -> Caller:
    async def run() -> Caller:
        token = current_tenant.set(tenant)
        try:
            caller = await admission.check(wire, Context())  # type: ignore[arg-type]
            await admission.admit(caller, wire, Context())  # type: ignore[arg-type]
            return caller
        finally:
            current_tenant.reset(token)

    return asyncio.run(run())


def _refusal(admission: Admission[Any], wire: pb.GenerateRequest, tenant: TenantConfig | None = ACME) -> Refused:
    with pytest.raises(Refused) as caught:
        _admit(admission, wire, tenant)
    return caught.value


@pytest.mark.parametrize("server", ["replica", "gateway"])
def test_each_check_refuses_with_its_status_and_trailers(server):
    admission: Admission[Any] = Admission(Limits(max_message_bytes=64), server=server)
    denied = _refusal(admission, _request(tenant="globex"))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED and "belongs to tenant 'acme'" in denied.message
    assert "may not use model 'other'" in _refusal(admission, _request(model="other")).message
    big = _refusal(admission, _request(prompt="x" * 100))
    assert big.code == grpc.StatusCode.INVALID_ARGUMENT and f"this {server} accepts at most 64" in big.message
    assert "request_id is empty" in _refusal(admission, _request(request_id="")).message

    caller = _admit(admission, _request())
    assert caller == Caller(ACME, "acme")
    admission.inflight[("acme", "r1")] = object()
    assert _refusal(admission, _request()).code == grpc.StatusCode.ALREADY_EXISTS
    admission.release(caller, ("acme", "r1"), tokens=10)
    quota = _refusal(admission, _request(request_id="r2"))  # one request per minute, spent on r1
    assert quota.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "over its quota" in quota.message
    assert 0 < int(quota.trailers["retry-after-ms"]) <= 60_001

    admission.draining = True
    draining = _refusal(admission, _request(request_id="r3"))
    assert draining.code == grpc.StatusCode.UNAVAILABLE and draining.trailers == {"tandem-draining": "1"}
    assert draining.message == f"this {server} is draining; retry on another"


def test_without_authentication_the_request_names_its_tenant_and_nothing_is_metered():
    admission: Admission[Any] = Admission(Limits(), server="replica")
    for index in range(3):
        assert _admit(admission, _request(tenant="lab", request_id=f"r{index}"), tenant=None) == Caller(None, "lab")


def test_retry_after_rounds_up_and_is_never_zero():
    assert retry_after_ms(0.0) == "1" and retry_after_ms(1.5) == "1501"
