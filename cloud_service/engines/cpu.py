"""The CPU engine: a transformers model with continuous batching, the embedded default where there is no GPU.

One scheduler thread runs the loop: admit waiting requests (prefill them in one forward pass, emit each
first token at once), then one batched decode step for every running sequence (``KvBatch`` keeps their
left-padded KV cache and builds their attention masks), then per row the shared ``SequenceState`` turns
logits into the next TokenEvent. Finished or cancelled rows leave the batch at once and waiting requests take
their place between two steps, so concurrent streams share each forward pass instead of running one after
another. An idle engine gathers requests that arrive within ``gather_s`` of each other into one prefill, and
each step wakes each caller's event loop once (``Wakes``), not once per stream.

Prompt formatting, tokenization, sampling, stop sequences and detokenization are the edge runtime's, so a
request gives the same text on the device and in the cloud for the same model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_service.engines.kv_batch import KvBatch, prebuilt_mask_fits, prefill_inputs, prefill_mask, select_rows
from cloud_service.engines.waiting import WaitingQueue
from edge_runtime.channel import END, RequestChannel, Wakes
from edge_runtime.chat import TokenizerFacts, load_chat_template
from edge_runtime.engine import EngineInfo
from edge_runtime.errors import (
    EdgeRuntimeError,
    EngineClosedError,
    GenerationError,
    InvalidRequestError,
    ModelLoadError,
)
from edge_runtime.generation import SequenceState, encode_prompt, prompt_ids
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent

log = logging.getLogger(__name__)

MAX_GATHER_S = 0.1
"""Upper bound on ``gather_s``: it trades the first request's latency for batching and should stay small."""
GATHER_LIMIT_FACTOR = 4
"""The longest gathering of an idle engine, in ``gather_s``: a steady trickle does not hold the first back."""


@dataclass(frozen=True)
class CpuEngineOptions:
    max_running: int = 16
    """Sequences decoded together in one batch."""
    max_waiting: int = 256
    """Requests queued beyond those; more get EngineBusyError (the server answers RESOURCE_EXHAUSTED)."""
    gather_s: float = 0.003
    """An idle engine that gets a request waits until none has arrived for this long (at most
    ``GATHER_LIMIT_FACTOR`` times as long, or until ``max_running`` are waiting) and prefills them together.
    Requests that reach a server together arrive a few hundred microseconds apart; prefilled one by one, the
    later ones wait for the earlier ones' prefill and a decode step first. 0: admit at once."""
    context_length: int | None = None
    """Tokens per sequence; None: the model's max_position_embeddings."""
    threads: int | None = None
    """torch intra-op threads; None: torch's default."""
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("max_running", "max_waiting"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.gather_s, int | float) or not 0 <= self.gather_s <= MAX_GATHER_S:
            raise InvalidRequestError(f"gather_s must be a number of seconds from 0 to {MAX_GATHER_S}, "
                                      f"got {self.gather_s!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InvalidRequestError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass(eq=False)
class _Row:
    channel: RequestChannel
    state: SequenceState
    last_token: int


class CpuEngine:
    """An Engine over a Hugging Face causal LM folder, batching concurrent requests on the CPU."""

    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None, version: str = "",
                 options: CpuEngineOptions | None = None) -> None:
        self.options = options or CpuEngineOptions()
        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder} is not a model folder: it has no config.json")
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelLoadError(f"{folder} has no {TOKENIZER_FILE}; the CPU engine needs a fast tokenizer")
        self.model = self._load_model(folder)
        self.tokenizer = BundleTokenizer(folder / TOKENIZER_FILE)
        facts = TokenizerFacts.read(folder)
        self.template = load_chat_template(folder, None, facts)
        eos = {self.tokenizer.token_id(facts.eos_token)} if facts.eos_token else set()
        self.eos_token_ids = frozenset(facts.eos_token_ids | {i for i in eos if i is not None})
        limit = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.context_length = min(self.options.context_length or limit, limit)
        self._info = EngineInfo(
            model=name or folder.name, backend="cpu", context_length=self.context_length, version=version,
            details={"path": str(folder), "dtype": self.options.dtype, "max_running": self.options.max_running},
            vocabulary=self.tokenizer.vocabulary,
        )
        self._queue = WaitingQueue(self._info.model, self.options.max_waiting)
        self._wake = self._queue.wake
        self._rows: list[_Row] = []
        self._prefilling: list[RequestChannel] = []
        """The requests of the prefill running now: taken from the queue, not yet rows."""
        self._prebuilt_mask = prebuilt_mask_fits(self.model.config, self.context_length)
        self._batch = self._new_batch()
        self._worker = threading.Thread(target=self._serve, name=f"tandem-cpu-{self._info.model}", daemon=True)
        self._worker.start()

    def _load_model(self, folder: Path) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, self.options.dtype))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"transformers cannot load {folder}: {exc}") from exc
        return model.eval()

    # -- the Engine protocol ---------------------------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def running(self) -> int:
        """Requests generating, those being prefilled included."""
        return len(self._rows) + len(self._prefilling)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def max_running(self) -> int:
        return self.options.max_running

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """How many tokens the request's prompt is, formatted and tokenized as generate() will."""
        return len(prompt_ids(self.tokenizer, request, self.template))

    @property
    def cache_usage(self) -> float:
        """Fraction of the batch's token capacity (max_running x context) in use."""
        return self._batch.tokens() / (self.options.max_running * self.context_length)

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        # The queue's own stream, not a wrapper around it: closing it is what frees the request's slot.
        return self._queue.stream(request)

    async def abort(self, request_id: str) -> bool:
        return self._queue.abort(request_id, lambda: [r.channel for r in self._rows] + list(self._prefilling))

    def close(self) -> None:
        if self._queue.close() and self._worker is not threading.current_thread():
            self._worker.join()

    # -- the scheduler thread --------------------------------------------------------------------------------

    def _serve(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._queue and not self._rows and not self._queue.closed:
                        self._wake.wait()
                    if not self._rows and self.options.gather_s > 0:
                        self._gather()
                    if self._queue.closed:
                        break
                    admitted = self._queue.take(self.options.max_running - len(self._rows))
                live = [c for c in admitted if not c.cancelled.is_set()]
                for channel in admitted:
                    if channel.cancelled.is_set():
                        channel.send(END)
                if live:
                    self._prefilling = list(live)  # neither waiting nor in a row while the prefill runs
                    try:
                        self._admit(live)
                    finally:
                        self._prefilling = []
                if self._rows:
                    self._decode_step()
        for row in self._rows:
            row.channel.send(EngineClosedError(f"{self._info.model}: the engine was closed during this request"))
            row.channel.send(END)
        self._rows, self._batch = [], self._new_batch()

    def _new_batch(self) -> KvBatch:
        return KvBatch(prebuilt_mask=self._prebuilt_mask)

    def _gather(self) -> None:
        """Called idle, holding ``_wake``: let requests arriving close after each other join the waiting ones
        (see ``CpuEngineOptions.gather_s``)."""
        quiet = self.options.gather_s
        now = time.monotonic()
        limit, deadline, seen = now + GATHER_LIMIT_FACTOR * quiet, now + quiet, len(self._queue)
        while len(self._queue) < self.options.max_running and not self._queue.closed:
            left = min(deadline, limit) - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)
            if len(self._queue) > seen:  # another one came: wait for a quiet spell again
                deadline, seen = time.monotonic() + quiet, len(self._queue)

    def _admit(self, channels: list[RequestChannel]) -> None:
        """Prefill the admitted requests in one forward pass, emit each one's first token, and add those that
        go on to the batch."""
        from transformers import DynamicCache

        prompts: list[tuple[RequestChannel, list[int]]] = []
        for channel in channels:
            try:
                ids = encode_prompt(self.tokenizer, channel.request, self.template, self.context_length)
                prompts.append((channel, ids))
            except EdgeRuntimeError as exc:
                self._prefilling.remove(channel)  # it ends here: no longer running once its caller hears
                channel.send(exc)
                channel.send(END)
        if not prompts:
            return
        inputs = prefill_inputs([ids for _, ids in prompts])
        padding = inputs["attention_mask"]
        if self._prebuilt_mask:
            inputs["attention_mask"] = prefill_mask(padding)
        cache = DynamicCache()
        try:
            logits = self.model(**inputs, past_key_values=cache, use_cache=True).logits[:, -1].float().numpy()
        except Exception as exc:  # a model failure: these requests fail, the engine goes on
            log.exception("prefill failed for %d requests", len(prompts))
            self._prefilling = []
            for channel, _ in prompts:
                channel.send(GenerationError(f"the CPU engine failed during prefill: {exc}"))
                channel.send(END)
            return
        self._prefilling = []  # they become rows (or end) from here on
        keep, ended, wakes = [], [], Wakes()
        for index, (channel, ids) in enumerate(prompts):
            state = SequenceState(
                channel.request, ids, context_length=self.context_length, eos_token_ids=self.eos_token_ids,
                detokenizer=self.tokenizer.detokenizer(ids),
            )
            event = state.advance(logits[index])
            channel.send(event, wakes)
            if event.finish_reason is not None:
                ended.append(channel)
                continue
            keep.append(index)
            self._rows.append(_Row(channel, state, event.token_id))  # type: ignore[arg-type]
        if keep:
            self._batch.add(select_rows(cache, keep), padding[keep])
        for channel in ended:
            channel.send(END, wakes)
        wakes.flush()

    def _decode_step(self) -> None:
        try:
            logits = self.model(**self._batch.step_inputs([row.last_token for row in self._rows])).logits
        except Exception as exc:
            log.exception("batched decode failed")
            for row in self._rows:
                row.channel.send(GenerationError(f"the CPU engine failed during decoding: {exc}"))
                row.channel.send(END)
            self._rows, self._batch = [], self._new_batch()
            return
        rows = logits[:, -1].float().numpy()
        keep, ended, wakes = [], [], Wakes()
        for index, row in enumerate(self._rows):
            if row.channel.cancelled.is_set():
                self._finish_cancelled(row)
            else:
                event = row.state.advance(rows[index])
                row.channel.send(event, wakes)
                if event.finish_reason is None:
                    row.last_token = event.token_id  # type: ignore[assignment]
                    keep.append(index)
                    continue
            ended.append(row.channel)
        if ended:
            self._rows = [self._rows[i] for i in keep]
            self._batch.keep(keep)
        for channel in ended:  # after the rows left: a caller woken by END sees the slot free
            channel.send(END, wakes)
        wakes.flush()  # one wake-up per event loop for the whole step

    def _finish_cancelled(self, row: _Row) -> None:
        if row.channel.aborted:
            row.channel.send(TokenEvent("", None, None, FinishReason.ABORT, row.state.usage))
        elif self._queue.closed:
            row.channel.send(EngineClosedError(f"{self._info.model}: the engine was closed during this request"))
