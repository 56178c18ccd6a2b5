"""The cloud side: a CloudClient to the gateway (or one replica), created on first use.

A policy in ``local_only`` mode never builds this side, so no connection is ever opened. The first token
must arrive within ``first_token_timeout_s`` (then the device takes over); the whole call has ``timeout_s``.
Each ``generate`` returns its own ``SideStream``: concurrent streams served by different versions never see
each other's version or vocabulary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edge_runtime.types import GenerationRequest, TokenEvent
from sdk.backends.failure import LinkFailure, SideFailure
from sdk.backends.stream import SideStream
from sdk.policy import CloudSettings
from sdk.reasons import Reason, Side

if TYPE_CHECKING:
    from cloud_service.client import ClientTls, CloudClient


class CloudSide:
    side = Side.CLOUD

    def __init__(self, settings: CloudSettings) -> None:
        self.settings = settings
        self._client: CloudClient | None = None
        self.model = settings.model

    def client_tls(self) -> ClientTls | None:
        from cloud_service.client import ClientTls

        settings = self.settings
        if not settings.uses_tls:
            return None
        return ClientTls(ca=settings.tls_ca, cert=settings.tls_cert, key=settings.tls_key,
                         server_name=settings.tls_server_name)

    def client(self) -> CloudClient:
        if self._client is None:
            from cloud_service.client import CloudClient

            settings = self.settings
            self._client = CloudClient(settings.target or "", api_key=settings.resolved_api_key(),
                                       tls=self.client_tls(), timeout_s=settings.timeout_s, tenant=settings.tenant)
        return self._client

    def generate(self, request: GenerationRequest) -> SideStream:
        """The cloud's answer; its version and vocabulary are the stream's once the first chunk names them."""
        return SideStream(self.side, self.settings.model, self.settings.model_version,
                          lambda stream: self._events(request, stream))

    async def _events(self, request: GenerationRequest, serving: SideStream) -> AsyncIterator[TokenEvent]:
        from cloud_service.errors import CloudError, StreamInterruptedError

        stream = self.client().generate(request, model=self.settings.model,
                                        model_version=self.settings.model_version,
                                        on_serving=lambda version, vocabulary: serving.serving("", version,
                                                                                               vocabulary))
        try:
            try:
                first = await asyncio.wait_for(anext(stream), self.settings.first_token_timeout_s)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise LinkFailure(self.side, Reason.CLOUD_FAILED,
                                  f"no token within {self.settings.first_token_timeout_s:g} s", retryable=True,
                                  code="FIRST_TOKEN_TIMEOUT") from exc
            yield first
            async for event in stream:
                yield event
        except StreamInterruptedError as exc:
            failure = LinkFailure if _says_link_is_down(exc.cause) else SideFailure
            raise failure(self.side, Reason.STREAM_BROKEN, str(exc), retryable=True, code=exc.code) from exc
        except CloudError as exc:
            failure = LinkFailure if _says_link_is_down(exc) else SideFailure
            raise failure(self.side, Reason.CLOUD_FAILED, str(exc), retryable=exc.retryable, code=exc.code) from exc
        finally:
            await stream.aclose()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _says_link_is_down(error: BaseException | None) -> bool:
    """An unreachable cloud or a passed deadline, which the link monitor should hear of (a refusal or an
    engine error says nothing about the link)."""
    from cloud_service.errors import CloudTimeoutError, CloudUnavailableError

    return isinstance(error, CloudUnavailableError | CloudTimeoutError)
