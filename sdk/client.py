"""HybridClient and AsyncHybridClient: the OpenAI-shaped client that answers on the device or in the cloud.

    from sdk import HybridClient

    with HybridClient("tandem.toml") as client:
        response = client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}], max_tokens=64)
        print(response.choices[0].message.content, response.route.side, response.route.reasons)

        with client.chat.completions.create(messages=..., stream=True) as stream:
            for chunk in stream:
                print(chunk.choices[0].delta.content, end="")
        print(stream.route.switches)

``AsyncHybridClient`` has the same surface with ``await`` / ``async for`` / ``async with``; HybridClient runs
one on a private event-loop thread. Requests are checked before any work starts (RequestError); when
neither side can answer, NoRouteError lists each side's reason.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Required, TypedDict, Unpack, overload

from edge_runtime.errors import InvalidRequestError
from edge_runtime.loop_thread import LoopThread
from edge_runtime.types import MESSAGES, GenerationRequest, Message, SamplingParams, TokenEvent, chat_messages
from sdk.backends.cloud import CloudSide
from sdk.backends.edge import EdgeSide
from sdk.backends.failure import SideFailure
from sdk.backends.openai_cloud import OpenAICloudSide
from sdk.completions import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
)
from sdk.errors import ClientClosedError, RequestError
from sdk.orchestrator import Orchestrator
from sdk.policy import CloudApi, Mode, Policy, load_policy
from sdk.provisioning import Provisioner
from sdk.route import Route, RouteBuilder
from sdk.signals.hub import SignalHub
from sdk.telemetry import RequestRecord, Telemetry

if TYPE_CHECKING:
    from sdk.signals.link import LinkMonitor


MAX_TOKENS_LIMIT = 32768
"""Larger max_tokens values are refused as a mistake (no device or replica generates that much)."""
MAX_MESSAGES = 4096


def _messages(messages: Any) -> tuple[Message, ...]:
    """``messages=`` as the request's messages; RequestError names the field by its path in the wire's
    GenerateRequest, as the edge runtime's and the cloud's errors do (``chat.messages[1].role``)."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise RequestError(f"{MESSAGES} must be a list of {{'role': ..., 'content': ...}} items")
    if not messages:
        raise RequestError(f"{MESSAGES} is empty; give at least one message")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(f"{MESSAGES} has {len(messages)} items; at most {MAX_MESSAGES}")
    pairs = []
    for index, item in enumerate(messages):
        if isinstance(item, Message):
            pairs.append((item.role, item.content))
        elif isinstance(item, Mapping) and "role" in item and "content" in item:
            pairs.append((item["role"], item["content"]))
        else:
            raise RequestError(f"{MESSAGES}[{index}] must be a mapping with 'role' and 'content'")
    try:
        out = chat_messages(pairs)
    except InvalidRequestError as exc:
        raise RequestError(str(exc)) from None
    if out[-1].role == "assistant":
        raise RequestError(f"{MESSAGES}[{len(out) - 1}] is the assistant's; to continue an answer pass "
                           "assistant_prefix=")
    return out


def build_request(messages: Any, *, max_tokens: int | None = None, temperature: float | None = None,
                  top_p: float | None = None, top_k: int | None = None, stop: str | Iterable[str] | None = None,
                  seed: int | None = None, assistant_prefix: str = "", request_id: str | None = None
                  ) -> GenerationRequest:
    """The edge runtime's request for OpenAI-style arguments; RequestError names what is wrong by the field's
    path in the wire's GenerateRequest (``sampling.temperature``), as the edge runtime and the cloud do."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise RequestError(f"sampling.max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {max_tokens!r}")
    sampling: dict[str, Any] = {"max_tokens": max_tokens if max_tokens is not None else SamplingParams.max_tokens}
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k), ("seed", seed)):
        if value is not None:
            sampling[name] = value
    if stop is not None:
        sampling["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    try:
        return GenerationRequest(messages=_messages(messages), sampling=SamplingParams(**sampling),
                                 assistant_prefix=assistant_prefix, request_id=request_id or uuid.uuid4().hex)
    except InvalidRequestError as exc:
        raise RequestError(str(exc)) from None


class AsyncChatStream:
    """An async iterator of ChatCompletionChunk and an async context manager; leaving it cancels the request."""

    def __init__(self, client: AsyncHybridClient, request: GenerationRequest, mode: Mode) -> None:
        self._client = client
        self._request = request
        self._builder = RouteBuilder()
        self._events = client._run(request, mode, self._builder)
        self._iterator: AsyncIterator[ChatCompletionChunk] | None = None
        self.id = f"chatcmpl-{request.request_id}"
        self.created = int(time.time())

    @property
    def route(self) -> Route:
        """The route so far; final once the stream ended."""
        return self._builder.build()

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        if self._iterator is None:
            self._iterator = self._chunks()
        return self._iterator

    async def __anext__(self) -> ChatCompletionChunk:
        return await anext(self.__aiter__())

    async def _chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        first = True
        async for event in self._events:
            route = None
            usage = None
            if event.finish_reason is not None:
                route = self._builder.build()
                if event.usage is not None:
                    usage = CompletionUsage(event.usage.prompt_tokens, event.usage.completion_tokens,
                                            event.usage.prompt_tokens + event.usage.completion_tokens)
            if not event.text and event.finish_reason is None and not first:
                continue
            delta = ChoiceDelta(event.text, "assistant" if first else None)
            logprobs = (event.logprob,) if event.logprob is not None else ()
            finish = str(event.finish_reason) if event.finish_reason is not None else None
            first = False
            choice = ChunkChoice(delta, finish, 0, logprobs)
            yield ChatCompletionChunk(self.id, self.created, self._builder.model, (choice,), usage, route)

    async def aclose(self) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]
        await self._events.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class CreateArgs(TypedDict, total=False):
    """The arguments of ``chat.completions.create`` besides ``stream`` (for the overloads' types)."""

    messages: Required[Any]
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    stop: str | Iterable[str] | None
    seed: int | None
    assistant_prefix: str
    mode: Mode | str | None
    request_id: str | None


class _AsyncCompletions:
    def __init__(self, client: AsyncHybridClient) -> None:
        self._client = client

    @overload
    async def create(self, *, stream: Literal[False] = False, **kwargs: Unpack[CreateArgs]) -> ChatCompletion: ...

    @overload
    async def create(self, *, stream: Literal[True], **kwargs: Unpack[CreateArgs]) -> AsyncChatStream: ...

    async def create(self, *, messages: Any, stream: bool = False, max_tokens: int | None = None,
                     temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                     stop: str | Iterable[str] | None = None, seed: int | None = None, assistant_prefix: str = "",
                     mode: Mode | str | None = None, request_id: str | None = None,
                     ) -> ChatCompletion | AsyncChatStream:
        """Answer ``messages``; ``stream=True`` returns an AsyncChatStream. ``mode`` overrides the policy's."""
        client = self._client
        client._check_open()
        request = build_request(messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                stop=stop, seed=seed, assistant_prefix=assistant_prefix, request_id=request_id)
        chosen = client._mode(mode)
        if stream:
            return AsyncChatStream(client, request, chosen)
        return await client._complete(request, chosen)


class _AsyncChat:
    def __init__(self, client: AsyncHybridClient) -> None:
        self.completions = _AsyncCompletions(client)


class AsyncHybridClient:
    def __init__(self, policy: Policy | str | os.PathLike[str], *, signals: SignalHub | None = None,
                 on_record: Callable[[RequestRecord], None] | None = None) -> None:
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        mode = self.policy.routing.mode
        self.edge = EdgeSide(self.policy.device) if self.policy.device.configured and mode is not Mode.CLOUD_ONLY \
            else None
        self.cloud: CloudSide | OpenAICloudSide | None = None
        if self.policy.cloud.configured and mode is not Mode.LOCAL_ONLY:
            openai = self.policy.cloud.api is CloudApi.OPENAI
            self.cloud = OpenAICloudSide(self.policy.cloud) if openai else CloudSide(self.policy.cloud)
        self.link: LinkMonitor | None = None
        if signals is None:
            signals = SignalHub(link=self._link_monitor())
            self._own_signals = True
        else:
            self._own_signals = False
            self.link = signals.link
        self.signals = signals
        self.telemetry = Telemetry(on_record)
        self.orchestrator = Orchestrator(self.policy, edge=self.edge, cloud=self.cloud, signals=self.signals)
        self.provisioner: Provisioner | None = None
        if self.policy.device.provision_bundle and self.edge is not None and isinstance(self.cloud, CloudSide):
            self.provisioner = Provisioner(self.policy.device.provision_bundle, self.edge, self.cloud)
        self.chat = _AsyncChat(self)
        self._closed = False
        self._started = False

    def _link_monitor(self) -> LinkMonitor | None:
        if self.cloud is None:
            return None
        from sdk.signals.link import LinkMonitor

        settings = self.policy.cloud
        if isinstance(self.cloud, OpenAICloudSide):
            from sdk.signals.http_link import HttpLinkMonitor

            self.link = HttpLinkMonitor(self.cloud.base_url, api_key=settings.resolved_api_key(),
                                        verify=self.cloud.verify, interval_s=settings.health_interval_s)
            return self.link
        # The Inference service's readiness: NOT_SERVING while a replica or the gateway drains.
        self.link = LinkMonitor(settings.target or "", service="tandem.v1.Inference",
                                api_key=settings.resolved_api_key(), tls=self.cloud.client_tls(),
                                interval_s=settings.health_interval_s)
        return self.link

    def _mode(self, mode: Mode | str | None) -> Mode:
        if mode is None:
            return self.policy.routing.mode
        try:
            return Mode(mode)
        except ValueError:
            raise RequestError(f"mode {mode!r} is not one of {', '.join(m.value for m in Mode)}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError

    async def start(self) -> None:
        """Start the signal refresh and bundle provisioning now (the first request does it otherwise)."""
        self._check_open()
        if self._started:
            return
        self._started = True
        if self._own_signals:
            self.signals.start()
        if self.provisioner is not None:
            self.provisioner.start()

    async def preload(self) -> bool:
        """Verify and load the device bundle (and read its router) now rather than on the first device request,
        so that request's latency and routing are already those of a warm device. False when the device cannot
        be used (no bundle, not trusted, memory short...): requests then route around it as usual."""
        await self.start()
        if self.edge is None:
            return False
        try:
            await self.edge.engine()
        except SideFailure:
            return False
        self.orchestrator.estimator()  # reads the bundle's router now
        return True

    async def _run(self, request: GenerationRequest, mode: Mode, route: RouteBuilder) -> AsyncIterator[TokenEvent]:
        await self.start()
        error: BaseException | None = None
        try:
            async for event in self.orchestrator.run(request, mode, route):
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not isinstance(error, GeneratorExit | asyncio.CancelledError):
                self.telemetry.record(RequestRecord.of(request.request_id, str(mode),
                                                       route.build() if route.attempts else None, error))

    async def _complete(self, request: GenerationRequest, mode: Mode) -> ChatCompletion:
        builder = RouteBuilder()
        text: list[str] = []
        logprobs: list[float] = []
        finish, usage = "stop", None
        async for event in self._run(request, mode, builder):
            text.append(event.text)
            if event.logprob is not None:
                logprobs.append(event.logprob)
            if event.finish_reason is not None:
                finish, usage = str(event.finish_reason), event.usage
        route = builder.build()
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, route.tokens)
        return ChatCompletion(
            f"chatcmpl-{request.request_id}", int(time.time()), route.model,
            (Choice(ChatCompletionMessage("".join(text)), finish, 0, tuple(logprobs)),),
            CompletionUsage(prompt, completion, prompt + completion), route,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.provisioner is not None:
            await self.provisioner.close()
        if self._own_signals:
            await asyncio.to_thread(self.signals.close)
        if self.cloud is not None:
            await self.cloud.close()
        if self.edge is not None:
            await asyncio.to_thread(self.edge.close)

    async def __aenter__(self) -> AsyncHybridClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ChatStream:
    """An iterator of ChatCompletionChunk and a context manager; leaving it cancels the request."""

    def __init__(self, client: HybridClient, stream: AsyncChatStream) -> None:
        self._loop = client._loop
        self._stream = stream

    @property
    def route(self) -> Route:
        return self._stream.route

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return self._loop.next(self._stream)

    def close(self) -> None:
        self._loop.call(self._stream.aclose())

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._loop.submit(self._stream.aclose())


class _Completions:
    def __init__(self, client: HybridClient) -> None:
        self._client = client

    @overload
    def create(self, *, stream: Literal[False] = False, **kwargs: Unpack[CreateArgs]) -> ChatCompletion: ...

    @overload
    def create(self, *, stream: Literal[True], **kwargs: Unpack[CreateArgs]) -> ChatStream: ...

    def create(self, **kwargs: Any) -> ChatCompletion | ChatStream:
        """As AsyncHybridClient's ``chat.completions.create``; ``stream=True`` returns a ChatStream."""
        result = self._client._loop.call(self._client.aio.chat.completions.create(**kwargs))
        if isinstance(result, AsyncChatStream):
            return ChatStream(self._client, result)
        return result


class _Chat:
    def __init__(self, client: HybridClient) -> None:
        self.completions = _Completions(client)


class HybridClient:
    """The blocking client: an AsyncHybridClient on a private event-loop thread (``edge_runtime.LoopThread``)."""

    def __init__(self, policy: Policy | str | os.PathLike[str], *, signals: SignalHub | None = None,
                 on_record: Callable[[RequestRecord], None] | None = None) -> None:
        self._loop = LoopThread("tandem-hybrid-client", closed=ClientClosedError)

        async def build() -> AsyncHybridClient:
            return AsyncHybridClient(policy, signals=signals, on_record=on_record)

        try:
            self.aio = self._loop.call(build())
        except BaseException:
            self._loop.stop()
            raise
        self.chat = _Chat(self)

    @property
    def policy(self) -> Policy:
        return self.aio.policy

    @property
    def telemetry(self) -> Telemetry:
        return self.aio.telemetry

    @property
    def signals(self) -> SignalHub:
        """The device signals the decisions read (``override(battery_percent=12, ...)`` to inject values)."""
        return self.aio.signals

    def start(self) -> None:
        self._loop.call(self.aio.start())

    def preload(self) -> bool:
        """See AsyncHybridClient.preload."""
        return self._loop.call(self.aio.preload())

    def close(self) -> None:
        if self._loop.stopped:
            return
        self._loop.call(self.aio.close())
        self._loop.stop()

    def __enter__(self) -> HybridClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
