"""A *load simulator* engine, for routing experiments only: it runs no model and its text means nothing.

It behaves like a batching LLM engine in *time*, so a gateway's balancing can be measured on a laptop: the
replica server, the gateway and the benchmark treat it as any engine (``engine = "simulator"`` in a
[[models]] entry). What it models:

- **Tokens.** The prompt is rendered as text (chat messages as ``<|role|>content\\n``, then ``<|assistant|>``
  and the assistant prefix; or the raw prompt plus the prefix) and counts one token per ``CHARS_PER_TOKEN``
  characters.
- **Prefix cache.** An LRU of ``BLOCK_TOKENS``-token blocks keyed by a hash chain (a block's key covers every
  character before it, as in vLLM's automatic prefix caching). A prompt's leading blocks found there are
  cached and skip prefill; a finished sequence leaves its prompt and answer in the cache, so the next turn of
  a conversation finds its history there.
- **Schedule.** One loop of steps. Each step admits waiting requests (first come, first served) while a slot
  (``max_running``) and KV room (prompt + max new tokens reserved out of ``kv_capacity_tokens``) are free,
  prefills up to ``prefill_chunk_tokens`` uncached prompt tokens (chunked prefill) and decodes one token for
  every sequence past its prefill. A step lasts ``decode_step_s + decode_s_per_sequence x decoding +
  prefill_s_per_token x prefilled``; a sequence's first token comes at the end of the step that completes its
  prefill.
- **Output.** Deterministic filler tokens (the same request gives the same tokens), each exactly
  ``CHARS_PER_TOKEN`` characters, until ``max_tokens`` or the context is full. Stop strings and sampling
  parameters are not simulated; the stream never ends with STOP.

Everything runs as one asyncio task on the caller's event loop (no thread); ``close()`` may be called from
another thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.engine import EngineInfo
from edge_runtime.errors import EngineBusyError, EngineClosedError, InvalidRequestError
from edge_runtime.generation import check_prompt_length
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage

CHARS_PER_TOKEN = 4
BLOCK_TOKENS = 16
"""Tokens per prefix-cache block (vLLM's default block size)."""
BLOCK_CHARS = BLOCK_TOKENS * CHARS_PER_TOKEN
FILLER = (" lor", " ips", " dol", " sit", " ame", " con", " sec", " adi",
          " eli", " sed", " eiu", " tem", " inc", " lab", " mag", " ali")
"""The simulator's vocabulary: every generated token is one of these (CHARS_PER_TOKEN characters each)."""
FILLER_LOGPROB = -1.0
_END = object()


@dataclass(frozen=True)
class SimulatorOptions:
    """The simulated engine's capacity and speed (defaults: roughly a 7-8B model on one data-centre GPU)."""

    max_running: int = 16
    """Sequences decoded together in one batch."""
    max_waiting: int = 1024
    """Requests queued beyond those; more get EngineBusyError (RESOURCE_EXHAUSTED)."""
    prefill_s_per_token: float = 0.0001
    """Seconds of a step per prefilled (uncached) prompt token."""
    prefill_chunk_tokens: int = 4096
    """Most prompt tokens prefilled in one step (chunked prefill)."""
    decode_step_s: float = 0.015
    """Fixed seconds of every step."""
    decode_s_per_sequence: float = 0.0005
    """Seconds a step grows by per sequence it decodes."""
    kv_capacity_tokens: int = 262_144
    """KV cache in tokens; each running sequence reserves its prompt plus its max new tokens."""
    prefix_cache_tokens: int = 131_072
    """Tokens the prefix cache (LRU of blocks) holds; 0 turns it off."""
    context_length: int = 32_768

    def __post_init__(self) -> None:
        for name in ("max_running", "max_waiting", "prefill_chunk_tokens", "kv_capacity_tokens", "context_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequestError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.prefix_cache_tokens, int) or self.prefix_cache_tokens < 0:
            raise InvalidRequestError(f"prefix_cache_tokens must be an integer >= 0, "
                                      f"got {self.prefix_cache_tokens!r}")
        for name in ("prefill_s_per_token", "decode_step_s", "decode_s_per_sequence"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise InvalidRequestError(f"{name} must be a number >= 0, got {value!r}")
        if self.kv_capacity_tokens < self.context_length:
            raise InvalidRequestError(f"kv_capacity_tokens ({self.kv_capacity_tokens}) must hold "
                                      f"at least one full context ({self.context_length})")

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> SimulatorOptions:
        """From a config's [models.simulator] table; unknown names raise InvalidRequestError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise InvalidRequestError(f"unknown simulator option(s) {', '.join(unknown)}; "
                                      f"known: {', '.join(sorted(known))}")
        return cls(**table)


def render(request: GenerationRequest) -> str:
    """The prompt text the simulator counts and caches."""
    if request.messages is None:
        return (request.prompt or "") + request.assistant_prefix
    turns = "".join(f"<|{m.role}|>{m.content}\n" for m in request.messages)
    return f"{turns}<|assistant|>{request.assistant_prefix}"


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def block_keys(text: str, previous: int = 0, start: int = 0) -> list[int]:
    """Hash-chain keys of the full blocks of ``text`` from character ``start`` (after the block ``previous``)."""
    keys = []
    for offset in range(start, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        previous = hash((previous, text[offset:offset + BLOCK_CHARS]))
        keys.append(previous)
    return keys


def filler_text(seed: int, start: int, count: int) -> str:
    return "".join(FILLER[(seed + i) % len(FILLER)] for i in range(start, start + count))


class PrefixCache:
    """An LRU of block keys holding at most ``capacity_blocks``."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = capacity_blocks
        self._blocks: collections.OrderedDict[int, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def cached_blocks(self, keys: list[int]) -> int:
        """How many leading ``keys`` are cached (those are touched)."""
        count = 0
        for key in keys:
            if key not in self._blocks:
                break
            self._blocks.move_to_end(key)
            count += 1
        return count

    def insert(self, keys: list[int]) -> None:
        if not self.capacity:
            return
        for key in keys:
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    text: str
    prompt_tokens: int
    keys: list[int]
    max_new: int
    seed: int
    queue: asyncio.Queue[Any]
    to_prefill: int = 0
    cached_tokens: int = 0
    generated: int = 0
    cancelled: bool = False
    aborted: bool = False
    done: bool = False
    reserved: int = field(init=False)

    def __post_init__(self) -> None:
        self.reserved = self.prompt_tokens + self.max_new

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.generated, self.cached_tokens)


class SimulatorEngine:
    """A load simulator behind the served-engine protocol (see the module docstring); no model, filler text."""

    def __init__(self, *, name: str | None = None, version: str = "", options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self._info = EngineInfo(
            model=name or "simulator", backend="simulator", context_length=self.options.context_length,
            version=version, details=dataclasses.asdict(self.options) | {"simulated": True},
        )
        self.cache = PrefixCache(self.options.prefix_cache_tokens // BLOCK_TOKENS)
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._reserved = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # -- the served-engine protocol ----------------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def max_running(self) -> int:
        return self.options.max_running

    @property
    def cache_usage(self) -> float:
        """Fraction of the KV capacity reserved by running sequences."""
        return self._reserved / self.options.kv_capacity_tokens

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return count_tokens(render(request))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        if self._closed:
            raise EngineClosedError(f"{self._info.model}: the engine is closed")
        if len(self._waiting) >= self.options.max_waiting:
            raise EngineBusyError(f"{self._info.model}: {len(self._waiting)} requests are already waiting "
                                  f"(max_waiting={self.options.max_waiting}); retry later")
        sequence = self._sequence(request)
        self._ensure_scheduler()
        self._waiting.append(sequence)
        assert self._wake is not None
        self._wake.set()
        try:
            while (item := await sequence.queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not sequence.done:  # the caller left: drop it now if queued, at the next step if running
                sequence.cancelled = True
                if sequence in self._waiting:
                    self._waiting.remove(sequence)
                    sequence.done = True

    async def abort(self, request_id: str) -> bool:
        for sequence in self._waiting:
            if sequence.request.request_id == request_id:
                self._waiting.remove(sequence)
                self._finish(sequence, FinishReason.ABORT)
                return True
        for sequence in self._running:
            if sequence.request.request_id == request_id and not sequence.done:
                sequence.aborted = True  # ended with ABORT at the end of the current step
                return True
        return False

    def close(self) -> None:
        """Fail every queued and running request with EngineClosedError; safe from any thread."""
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is listening
            loop.call_soon_threadsafe(self._fail_all)

    # -- the scheduler ----------------------------------------------------------------------------------

    def _sequence(self, request: GenerationRequest) -> _Sequence:
        text = render(request)
        tokens = count_tokens(text)
        check_prompt_length(tokens, self.options.context_length)
        room = self.options.context_length - tokens
        max_new = min(request.sampling.max_tokens or room, room)
        return _Sequence(request, text, tokens, block_keys(text), max_new, zlib.crc32(text.encode()),
                         asyncio.Queue())

    def _ensure_scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        self._loop, self._wake = loop, asyncio.Event()
        self._waiting.clear()  # anything left belongs to a loop that is gone
        self._running, self._reserved = [], 0
        self._task = loop.create_task(self._schedule(), name=f"tandem-simulator-{self._info.model}")

    async def _schedule(self) -> None:
        assert self._wake is not None and self._loop is not None
        next_at = self._loop.time()
        while not self._closed:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
                next_at = self._loop.time()
                continue
            self._admit()
            decoding = [s for s in self._running if s.generated and not s.cancelled]
            prefilling, prefilled = self._prefill_plan()
            options = self.options
            step_s = (options.decode_step_s + options.decode_s_per_sequence * len(decoding)
                      + options.prefill_s_per_token * prefilled)
            # Steps are timed against the clock, not chained sleeps, so a busy event loop does not slow the
            # simulated engine down (a late step is followed by an early one).
            next_at = max(next_at, self._loop.time() - step_s) + step_s
            await asyncio.sleep(max(0.0, next_at - self._loop.time()))
            self._step(decoding, prefilling)

    def _admit(self) -> None:
        options = self.options
        while self._waiting and len(self._running) < options.max_running:
            sequence = self._waiting[0]
            if self._running and self._reserved + sequence.reserved > options.kv_capacity_tokens:
                break  # no KV room: the queue waits (first come, first served)
            self._waiting.popleft()
            cached = self.cache.cached_blocks(sequence.keys) * BLOCK_TOKENS
            sequence.cached_tokens = min(cached, sequence.prompt_tokens - 1)  # the last token is always computed
            sequence.to_prefill = sequence.prompt_tokens - sequence.cached_tokens
            self._reserved += sequence.reserved
            self._running.append(sequence)

    def _prefill_plan(self) -> tuple[list[tuple[_Sequence, int]], int]:
        """Which sequences prefill how many tokens this step (first come, first served, within the budget)."""
        budget = self.options.prefill_chunk_tokens
        plan = []
        for sequence in self._running:
            if budget <= 0:
                break
            if sequence.to_prefill and not sequence.cancelled:
                take = min(budget, sequence.to_prefill)
                plan.append((sequence, take))
                budget -= take
        return plan, self.options.prefill_chunk_tokens - budget

    def _step(self, decoding: list[_Sequence], prefilling: list[tuple[_Sequence, int]]) -> None:
        for sequence, tokens in prefilling:
            sequence.to_prefill -= tokens
            if sequence.to_prefill == 0:
                self.cache.insert(sequence.keys)
                decoding.append(sequence)  # the prefill's forward pass gives the first token
        for sequence in decoding:
            if sequence.done or sequence.cancelled:
                continue
            if sequence.aborted:
                self._finish(sequence, FinishReason.ABORT)
                continue
            index = sequence.generated
            sequence.generated += 1
            last = sequence.generated >= sequence.max_new
            token = (sequence.seed + index) % len(FILLER)
            if last:
                sequence.queue.put_nowait(TokenEvent(FILLER[token], token, FILLER_LOGPROB, FinishReason.LENGTH,
                                                     sequence.usage))
                self._finish(sequence, None)
            else:
                sequence.queue.put_nowait(TokenEvent(FILLER[token], token, FILLER_LOGPROB))
        for sequence in self._running:
            if sequence.cancelled and not sequence.done:
                sequence.done = True
            elif sequence.aborted and not sequence.done:
                self._finish(sequence, FinishReason.ABORT)
        if any(s.done for s in self._running):
            kept = [s for s in self._running if not s.done]
            self._reserved -= sum(s.reserved for s in self._running if s.done)
            self._running = kept

    def _finish(self, sequence: _Sequence, reason: FinishReason | None) -> None:
        """End a sequence; ``reason`` None: its last event was already sent. Its text stays in the cache."""
        if reason is not None:
            sequence.queue.put_nowait(TokenEvent("", None, None, reason, sequence.usage))
        sequence.queue.put_nowait(_END)
        sequence.done = True
        if sequence.generated and not sequence.to_prefill:
            full = len(sequence.keys) * BLOCK_CHARS
            answer = filler_text(sequence.seed, 0, sequence.generated)
            tail = sequence.text[full:] + answer
            self.cache.insert(block_keys(tail, sequence.keys[-1] if sequence.keys else 0))

    def _fail_all(self) -> None:
        for sequence in [*self._waiting, *self._running]:
            if not sequence.done:
                sequence.queue.put_nowait(EngineClosedError(f"{self._info.model}: the engine was closed"))
                sequence.queue.put_nowait(_END)
                sequence.done = True
        self._waiting.clear()
        self._running, self._reserved = [], 0
        if self._wake is not None:
            self._wake.set()
