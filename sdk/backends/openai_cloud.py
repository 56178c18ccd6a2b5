"""The cloud side on any OpenAI-compatible server: ``POST {base_url}/chat/completions``, streamed, over httpx.

    [cloud]
    api = "openai"
    base_url = "http://127.0.0.1:8080/v1"     # vLLM, llama.cpp's servers, Tandem's own HTTP endpoint...
    model = "assistant"
    api_key_env = "OPENAI_API_KEY"

``OpenAICloudSide`` has ``CloudSide``'s interface and failure typing, so the orchestrator, the circuit breaker,
the route and telemetry treat it the same way:

    connect error, connection lost, 502/503/504     LinkFailure (retryable; the link monitor hears of it)
    no first text within first_token_timeout_s      LinkFailure, code FIRST_TOKEN_TIMEOUT
    the whole call past timeout_s                   LinkFailure, code DEADLINE_EXCEEDED
    429 (retry-after read), 408, other 5xx          SideFailure, retryable, code HTTP_<status>
    400, 401, 403, 404, other 4xx                   SideFailure, not retryable, code HTTP_<status>
    ``data: {"error": ...}`` in the stream          SideFailure, reason STREAM_BROKEN, retryable
    the stream ends with no finish_reason           SideFailure, retryable, code STREAM_TRUNCATED

The last row matters with ``llama_cpp.server``: by default (``--interrupt_requests True``) any request that
arrives while it streams, a health check included, ends that stream at once with a bare ``data: [DONE]``.
That is read as a broken stream (retried or failed over, never a silently short answer); run it with
``--interrupt_requests False`` behind this SDK.

The server streams text deltas, not token ids: each delta becomes a ``TokenEvent`` with ``token_id`` None and
its text (the orchestrator counts it as one token); the closing event carries the finish reason and, when the
server sends it (``stream_options.include_usage``), the usage. A stream's vocabulary stays "" (unknown), so a
side continuing after it goes on from the delivered text, never from ids.

Continuing an answer (a request with an ``assistant_prefix``: the caller's, or the text delivered before a
mid-stream failover). The conversation goes out with a trailing assistant message holding the prefix and
``continue_final_message: true, add_generation_prompt: false`` (vLLM's extension, which Tandem's HTTP endpoint
also reads): a server that honours it renders the prefix as the open start of the answer and streams only what
follows. Servers that do not know the fields ignore them: llama-cpp-python's ``llama_cpp.server`` renders the
prefix as a finished assistant turn and opens a new one, so the model answers again from the start. Which kind
a server is, is measured once per side (on the first request with a prefix, or ``prefill_supported()``) by a
differential probe: the same two-message conversation (user, assistant), ``max_tokens = 1``, sent once with
the flags for a continuation and once with them set for a new turn (``continue_final_message: false,
add_generation_prompt: true``). Only the flags differ, so a server that reads them must answer the two
differently: with fewer prompt tokens for the continuation (no end-of-turn marker, no new assistant header),
or by refusing one of the two (Tandem's endpoint refuses a trailing assistant message with
``add_generation_prompt: true`` as contradictory). A server that ignores the flags renders the same prompt
twice: equal ``usage.prompt_tokens``. The probe needs no tokenizer, no model quality and no knowledge of the
chat template; a server that reports no usage, or refuses the continuation flags, counts as not honouring
them. An inconclusive probe (the server unreachable, the key refused) is not remembered.

On a server that does not honour them, the request goes out without the flags (a server that refuses unknown
fields still answers) with the prefix as the trailing assistant message, the delivered text as context. Its
answer is held back while it may still be repeating the end of the prefix; a repeated part (the whole prefix,
when the model starts over; or the end of it, at least ``MIN_OVERLAP_CHARS`` long) is cut, and the rest
streams on. The route says so: the attempt's ``continuation`` is ``WITHOUT_PREFILL`` and its ``detail`` says
how many characters were cut. The caller's text then has no gap and no repeat, though it is the model's new
answer after the cut rather than its own continuation. (A server that prefills any trailing assistant message,
as llama.cpp's C++ ``llama-server`` does, reads the same to the probe as one that ignores the flags; its answer
continues the prefix, so nothing is cut.)

The health of such a server is checked by ``sdk.signals.http_link.HttpLinkMonitor`` (``GET {base_url}/models``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage
from sdk.backends.failure import LinkFailure, SideFailure
from sdk.backends.stream import SideStream
from sdk.errors import PolicyError
from sdk.policy import CloudSettings
from sdk.reasons import Reason, Side
from sdk.route import Continuation

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tandem.sdk")

MIN_OVERLAP_CHARS = 8
"""The shortest repeat of the prefix's end (short of the whole prefix) that is cut from a new answer: shorter
matches are as likely a coincidence ("the", a space) as a repeat."""
PROBE_MESSAGES = ({"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello"})
REFUSED_BODY = (400, 422)
"""Statuses a server answers a body it will not take with (FastAPI servers say 422)."""
LINK_STATUSES = (502, 503, 504)
"""A proxy or the server saying it cannot serve now: heard as a link failure, as gRPC's UNAVAILABLE is."""
RETRYABLE_STATUSES = (408, 429)
MAX_ERROR_CHARS = 300
FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}


def http_tls(settings: CloudSettings) -> ssl.SSLContext | bool:
    """What httpx verifies an https:// server with: a context trusting ``tls_ca`` (and presenting
    ``tls_cert``/``tls_key``), else True (the system's CAs)."""
    if settings.tls_ca is None and settings.tls_cert is None:
        return True
    try:
        context = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
        if settings.tls_cert is not None and settings.tls_key is not None:
            context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise PolicyError("cloud.tls_ca" if settings.tls_cert is None else "cloud.tls_cert",
                          f"cannot use it: {exc}") from None
    return context


class OverlapCut:
    """Cuts the start of a new answer where it repeats the end of ``prefix`` (the text already delivered).

    ``feed`` each delta and send what it returns; ``finish`` at the end returns what is still held. Text is
    held while it may still be a repeat (it occurs in the prefix short of the prefix's end); then the longest
    repeat is cut: the start of the answer (after any leading whitespace) equal to the prefix's end, either
    the whole prefix or at least ``MIN_OVERLAP_CHARS`` of it. ``cut`` says how many characters went.
    """

    def __init__(self, prefix: str, min_overlap: int = MIN_OVERLAP_CHARS) -> None:
        self.prefix = prefix
        self.min_overlap = min_overlap
        self.held = ""
        self.decided = not prefix
        self.cut = 0

    def feed(self, text: str) -> str:
        if self.decided:
            return text
        self.held += text
        start = self.held.lstrip()
        if start and len(start) < len(self.prefix) and start in self.prefix[:-1]:
            return ""  # it may still grow into a repeat
        if not start:
            return ""
        return self._decide()

    def finish(self) -> str:
        return "" if self.decided else self._decide()

    def _decide(self) -> str:
        self.decided = True
        held, self.held = self.held, ""
        space = len(held) - len(held.lstrip())
        start = held[space:]
        for size in range(min(len(start), len(self.prefix)), 0, -1):
            if (size == len(self.prefix) or size >= self.min_overlap) and self.prefix.endswith(start[:size]):
                self.cut = space + size
                return held[self.cut:]
        return held


class OpenAICloudSide:
    """The cloud as an OpenAI-compatible server; an httpx client is created on first use."""

    side = Side.CLOUD

    def __init__(self, settings: CloudSettings) -> None:
        if settings.base_url is None:
            raise PolicyError("cloud.base_url", "an OpenAI-compatible cloud needs base_url")
        self.settings = settings
        self.model = settings.model
        self.base_url = settings.base_url
        self.verify = http_tls(settings)
        self._http: httpx.AsyncClient | None = None
        self._prefill: bool | None = None
        self._prefill_lock: asyncio.Lock | None = None

    # -- the HTTP client -----------------------------------------------------------------------------------

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            settings = self.settings
            key = settings.resolved_api_key()
            headers = {"authorization": f"Bearer {key}"} if key else {}
            # Our own deadlines (first token, whole call) bound each request; httpx's are a backstop.
            self._http = httpx.AsyncClient(base_url=self.base_url + "/", headers=headers, verify=self.verify,
                                           timeout=httpx.Timeout(settings.timeout_s))
        return self._http

    async def close(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()

    # -- generating ----------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> SideStream:
        """The server's answer, as text deltas (``token_id`` None) and a closing event."""
        return SideStream(self.side, self.model, "", lambda stream: self._events(request, stream))

    async def _events(self, request: GenerationRequest, serving: SideStream) -> AsyncIterator[TokenEvent]:
        import httpx

        settings = self.settings
        if request.messages is None:
            raise SideFailure(self.side, Reason.CLOUD_FAILED, "a raw prompt needs the gRPC cloud (api = \"grpc\")",
                              retryable=False, code="UNSUPPORTED")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout_s
        first_deadline = min(deadline, loop.time() + settings.first_token_timeout_s)
        text_seen = False
        try:
            async with asyncio.timeout_at(first_deadline):
                body, cut = await self._body(request, serving)
                client = self.http()
                response = await client.send(client.build_request("POST", "chat/completions", json=body),
                                             stream=True)
        except TimeoutError as exc:
            raise LinkFailure(self.side, Reason.CLOUD_FAILED, f"no token within {settings.first_token_timeout_s:g} s",
                              retryable=True, code="FIRST_TOKEN_TIMEOUT") from exc
        except httpx.TransportError as exc:
            raise _transport_failure(self.base_url, exc, Reason.CLOUD_FAILED) from exc
        try:
            if response.status_code != 200:
                await response.aread()
                raise _status_failure(self.base_url, response)
            finish: FinishReason | None = None
            usage: dict[str, Any] | None = None
            released, done = 0, False
            lines = _sse_data(response.aiter_lines())
            while not done:
                try:
                    async with asyncio.timeout_at(deadline if text_seen else first_deadline):
                        data = await anext(lines, None)
                except TimeoutError as exc:
                    if text_seen:
                        raise LinkFailure(self.side, Reason.STREAM_BROKEN, f"the call passed {settings.timeout_s:g} s",
                                          retryable=True, code="DEADLINE_EXCEEDED") from exc
                    raise LinkFailure(self.side, Reason.CLOUD_FAILED,
                                      f"no token within {settings.first_token_timeout_s:g} s", retryable=True,
                                      code="FIRST_TOKEN_TIMEOUT") from exc
                except httpx.TransportError as exc:
                    raise _transport_failure(self.base_url, exc, Reason.STREAM_BROKEN if text_seen
                                             else Reason.CLOUD_FAILED) from exc
                if data is None or data == "[DONE]":
                    if finish is None:
                        # An answer ends with a finish reason; a stream that stops short of one was cut (llama_cpp.
                        # server ends a stream with [DONE] alone when another request interrupts it).
                        raise SideFailure(self.side, Reason.STREAM_BROKEN if text_seen else Reason.CLOUD_FAILED,
                                          "the stream ended before the answer did (no finish_reason)",
                                          retryable=True, code="STREAM_TRUNCATED")
                    break
                chunk = _chunk(data)
                if "error" in chunk:
                    raise _stream_error(chunk["error"])
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(content, str) and content:
                        text_seen = True
                        text = cut.feed(content) if cut is not None else content
                        if text:
                            released += 1
                            yield TokenEvent(text, None, None)
                    if choice.get("finish_reason"):
                        finish = FINISH.get(str(choice["finish_reason"]), FinishReason.STOP)
                        text_seen = True
            if cut is not None:
                rest = cut.finish()
                if rest:
                    released += 1
                    yield TokenEvent(rest, None, None)
                serving.note = (f"continued without prefill: {self.base_url} does not honour continue_final_message, "
                                f"so it answered anew after the delivered text; {cut.cut} repeated characters cut")
            yield TokenEvent("", None, None, finish or FinishReason.STOP,
                             _usage(usage, released if cut is not None and cut.cut else None))
        finally:
            await response.aclose()

    async def _body(self, request: GenerationRequest, serving: SideStream) -> tuple[dict[str, Any], OverlapCut | None]:
        """The request body, and the cut its answer goes through (a continuation on a server that does not
        honour continue_final_message)."""
        assert request.messages is not None
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True, "stream_options": {"include_usage": True},
            "temperature": sampling.temperature,
        }
        # Only what differs from OpenAI's defaults goes out: a strict server refuses fields it does not know.
        if sampling.max_tokens is not None:
            body["max_tokens"] = sampling.max_tokens
        if sampling.top_p != 1.0:
            body["top_p"] = sampling.top_p
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.ignore_eos:
            body["ignore_eos"] = True
        prefix = request.assistant_prefix
        if not prefix:
            return body, None
        body["messages"].append({"role": "assistant", "content": prefix})
        if await self.prefill_supported():
            body |= {"continue_final_message": True, "add_generation_prompt": False}
            serving.continuation = Continuation.PREFILL
            return body, None
        serving.continuation = Continuation.WITHOUT_PREFILL
        return body, OverlapCut(prefix)

    # -- continuing an answer ------------------------------------------------------------------------------

    async def prefill_supported(self) -> bool:
        """Whether the server honours ``continue_final_message`` (measured once; see the module docstring).
        Raises SideFailure when the server cannot be asked (unreachable, the key refused)."""
        if self._prefill is None:
            if self._prefill_lock is None:
                self._prefill_lock = asyncio.Lock()
            async with self._prefill_lock:
                if self._prefill is None:
                    self._prefill = await self._probe_prefill()
                    log.info("%s %s continue_final_message", self.base_url,
                             "honours" if self._prefill else "does not honour")
        return self._prefill

    async def _probe_prefill(self) -> bool:
        base = {"model": self.settings.model, "messages": list(PROBE_MESSAGES), "max_tokens": 1,
                "temperature": 0.0, "stream": False}
        status, continued = await self._prompt_tokens(base | {"continue_final_message": True,
                                                              "add_generation_prompt": False})
        if status in REFUSED_BODY:
            return False  # it refuses the extension: it has to be asked without it
        status, new_turn = await self._prompt_tokens(base | {"continue_final_message": False,
                                                             "add_generation_prompt": True})
        if status in REFUSED_BODY:
            return True  # only the flags changed, and it answered differently: it reads them
        return continued is not None and new_turn is not None and continued < new_turn

    async def _prompt_tokens(self, body: dict[str, Any]) -> tuple[int, int | None]:
        """POST one whole (not streamed) completion: its status and ``usage.prompt_tokens`` (None when absent).
        A refused body is a status; anything else that is not an answer raises SideFailure."""
        import httpx

        try:
            response = await self.http().post("chat/completions", json=body)
        except httpx.TransportError as exc:
            raise _transport_failure(self.base_url, exc, Reason.CLOUD_FAILED) from exc
        if response.status_code in REFUSED_BODY:
            return response.status_code, None
        if not response.is_success:
            raise _status_failure(self.base_url, response)
        try:
            usage = response.json().get("usage") or {}
            tokens = usage.get("prompt_tokens")
        except (ValueError, AttributeError):
            return response.status_code, None
        return response.status_code, tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


# -- reading the stream ------------------------------------------------------------------------------------

async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event (its ``data:`` lines joined), from the response's lines."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        # "event:", "id:", "retry:" and ":" comments (keep-alive pings) carry nothing an answer needs
    if data:
        yield "\n".join(data)


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise SideFailure(Side.CLOUD, Reason.STREAM_BROKEN, f"the stream held an event that is not JSON: {data[:80]!r}",
                          retryable=True, code="BAD_STREAM") from exc
    if not isinstance(chunk, dict):
        raise SideFailure(Side.CLOUD, Reason.STREAM_BROKEN, f"the stream held an event that is not an object: "
                          f"{data[:80]!r}", retryable=True, code="BAD_STREAM")
    return chunk


def _usage(usage: dict[str, Any] | None, delivered: int | None) -> Usage | None:
    """The server's usage as the edge runtime's; ``delivered`` replaces its completion count when part of the
    answer was cut (the server counted the cut tokens too)."""
    if usage is None:
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion if delivered is None else delivered, cached if isinstance(cached, int) else 0)


# -- failures ----------------------------------------------------------------------------------------------

def _transport_failure(base_url: str, exc: Exception, reason: Reason) -> LinkFailure:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return LinkFailure(Side.CLOUD, reason, f"{base_url} timed out ({type(exc).__name__})", retryable=True,
                           code="DEADLINE_EXCEEDED")
    what = "cannot be reached" if isinstance(exc, httpx.ConnectError) else "dropped the connection"
    return LinkFailure(Side.CLOUD, reason, f"{base_url} {what}: {type(exc).__name__}: {exc}", retryable=True,
                       code="UNAVAILABLE")


def _status_failure(base_url: str, response: httpx.Response) -> SideFailure:
    """The failure an HTTP error status stands for (see the module docstring's table)."""
    status = response.status_code
    message = _error_message(response)
    detail = f"HTTP {status} from {base_url}: {message}"
    code = f"HTTP_{status}"
    if status in LINK_STATUSES:
        return LinkFailure(Side.CLOUD, Reason.CLOUD_FAILED, detail, retryable=True, code=code)
    if status in RETRYABLE_STATUSES or status >= 500:
        wait = _retry_after(response) if status == 429 else None
        if wait is not None:
            detail += f" (retry after {wait:g} s)"
        return SideFailure(Side.CLOUD, Reason.CLOUD_FAILED, detail, retryable=True, code=code, retry_after_s=wait)
    return SideFailure(Side.CLOUD, Reason.CLOUD_FAILED, detail, retryable=False, code=code)


def _error_message(response: httpx.Response) -> str:
    """The message of OpenAI's ``{"error": {"message"}}`` body, FastAPI's ``{"detail"}``, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_ERROR_CHARS] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:MAX_ERROR_CHARS]
        if isinstance(error, str):
            return error[:MAX_ERROR_CHARS]
        if body.get("detail"):
            return str(body["detail"])[:MAX_ERROR_CHARS]
    return response.text[:MAX_ERROR_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (in seconds; an HTTP date is not read)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def _stream_error(error: Any) -> SideFailure:
    """A ``data: {"error": ...}`` event: the server gave up on the answer mid-stream."""
    if isinstance(error, dict):
        message = str(error.get("message") or error)[:MAX_ERROR_CHARS]
        name = error.get("code") or error.get("type")
    else:
        message, name = str(error)[:MAX_ERROR_CHARS], None
    detail = f"the server ended the stream with an error: {message}" + (f" ({name})" if name else "")
    return SideFailure(Side.CLOUD, Reason.STREAM_BROKEN, detail, retryable=True, code="STREAM_ERROR")
