"""The llama.cpp engine: GGUF bundles (or a bare ``.gguf`` beside its ``tokenizer.json``) with continuous
batching on the CPU, through llama-cpp-python's C API.

One llama.cpp context holds one unified KV cache for ``max_running`` sequences (``kv_unified``, as
llama-server's ``--kv-unified``: any sequence may use any cell). One scheduler thread runs the loop; each step
builds one ``llama_batch`` holding every running sequence's next token and as much of the admitted prompts as
fits ``batch_tokens`` (chunked prefill, so a long prompt does not stall the others' decoding), and calls
``llama_decode`` once, the GIL released. Then each sequence's logits row goes through the edge runtime's
``SequenceState`` (sampling, stops, detokenization, limits). Requests join and leave between two steps.

Each of the ``max_running`` slots (a sequence id) keeps the tokens it last held: a new request takes the free
slot whose cache shares the longest prefix with its prompt and prefills only the rest (prefix reuse, as
llama-server's slots do), reported as ``Usage.cached_tokens``.

Tokenization (the bundle's tokenizer.json), the chat template, sampling and detokenization are the device's, and
the context is made as the device's GGUF backend makes its own (flash attention off, f16 KV cache), so a request
served alone gives the device's tokens for the same GGUF, and the vocabulary fingerprints match: a stream can
fail over between the device and a replica and continue from token ids.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_service.engines.waiting import WaitingQueue
from edge_runtime.bundle import MANIFEST_FILE, Manifest
from edge_runtime.channel import END, RequestChannel, Wakes
from edge_runtime.chat import TokenizerFacts, load_chat_template
from edge_runtime.decoder import reusable_prefix
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

DEFAULT_CONTEXT = 4096
"""Tokens per sequence when neither the options nor the bundle say (a bare GGUF: capped at its training length)."""


@dataclass(frozen=True)
class LlamaCppEngineOptions:
    max_running: int = 16
    """Sequences decoded together (llama.cpp sequence ids, each with a slot of the KV cache)."""
    max_waiting: int = 256
    """Requests queued beyond those; more get EngineBusyError (the server answers RESOURCE_EXHAUSTED)."""
    context_length: int | None = None
    """Tokens per sequence; None: the bundle's context length (a bare GGUF: its training length, at most
    DEFAULT_CONTEXT). The KV cache holds ``max_running`` times this."""
    threads: int | None = None
    """llama.cpp threads for decoding and prefill; None: every core."""
    batch_tokens: int = 512
    """Tokens per ``llama_decode``: the running sequences' next tokens, then prompt chunks up to this."""

    def __post_init__(self) -> None:
        for name in ("max_running", "max_waiting", "batch_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequestError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_tokens < self.max_running:
            raise InvalidRequestError(f"batch_tokens ({self.batch_tokens}) must be at least max_running "
                                      f"({self.max_running}): every running sequence decodes a token each step")
        for name in ("context_length", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidRequestError(f"{name} must be an integer >= 1 or unset, got {value!r}")


@dataclass(eq=False)
class _Slot:
    """One sequence id of the KV cache and the tokens it holds (kept after its request ends, for reuse)."""

    seq: int
    ids: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Row:
    """A request with a slot: prefilling (``pending`` prompt tokens left) or decoding (``last_token``)."""

    channel: RequestChannel
    slot: _Slot
    state: SequenceState
    pending: list[int]
    last_token: int | None = None
    output: int = -1
    """Its index in this step's batch whose logits it reads (-1: none this step)."""


def _load_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a cloud install has the edge extra's llama-cpp-python
        raise ModelLoadError("the llamacpp engine needs llama-cpp-python: pip install 'tandem-inference[edge]'") \
            from exc
    return llama_cpp


def _model_file(path: Path) -> tuple[Path, Manifest | None]:
    """The GGUF file of a bundle folder (and its manifest), or a bare ``.gguf``."""
    if path.is_dir():
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ModelLoadError(f"{path} is not a bundle: it has no {MANIFEST_FILE}")
        manifest = Manifest.from_json(manifest_path.read_bytes())
        if manifest.format != "gguf":
            raise ModelLoadError(f"{path} is a {manifest.format!r} bundle; the llamacpp engine serves GGUF bundles")
        return path / manifest.model_file, manifest
    if path.suffix != ".gguf" or not path.is_file():
        raise ModelLoadError(f"{path} is neither a GGUF bundle folder nor a .gguf file")
    return path, None


class LlamaCppEngine:
    """An Engine over a GGUF model, batching concurrent requests in one llama.cpp context."""

    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None, version: str = "",
                 options: LlamaCppEngineOptions | None = None) -> None:
        self.options = options or LlamaCppEngineOptions()
        model_file, manifest = _model_file(Path(model_path))
        folder = model_file.parent
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelLoadError(f"{folder} has no {TOKENIZER_FILE}: the llamacpp engine tokenizes as the device "
                                 "does, with the bundle's tokenizer")
        self.tokenizer = BundleTokenizer(folder / TOKENIZER_FILE)
        facts = TokenizerFacts.read(folder)
        self.template = load_chat_template(folder, manifest.chat_template if manifest else None, facts)
        self._llama_cpp = llama_cpp = _load_llama_cpp()
        self._model = self._load_model(model_file)
        vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        trained = int(llama_cpp.llama_model_n_ctx_train(self._model))
        wanted = self.options.context_length or (manifest.context_length if manifest else min(trained,
                                                                                                 DEFAULT_CONTEXT))
        self.context_length = min(wanted, trained)
        self._ctx = self._new_context(model_file)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.options.batch_tokens, 0, 1)
        eos = int(llama_cpp.llama_vocab_eos(vocab))
        self.eos_token_ids = frozenset(facts.eos_token_ids | ({eos} if eos >= 0 else set()))
        self._info = EngineInfo(
            model=name or (manifest.name if manifest else model_file.stem), backend="llamacpp",
            context_length=self.context_length, version=version,
            details={"path": str(model_file), "max_running": self.options.max_running,
                     "quantization": manifest.quantization if manifest else ""},
            vocabulary=self.tokenizer.vocabulary,
        )
        self._slots = [_Slot(seq) for seq in range(self.options.max_running)]
        self._free: list[_Slot] = list(self._slots)
        self._queue = WaitingQueue(self._info.model, self.options.max_waiting)
        self._wake = self._queue.wake
        self._rows: list[_Row] = []
        self._worker = threading.Thread(target=self._serve, name=f"tandem-llamacpp-{self._info.model}", daemon=True)
        self._worker.start()

    def _load_model(self, model_file: Path) -> Any:
        llama_cpp = self._llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        model = llama_cpp.llama_model_load_from_file(str(model_file).encode("utf-8"), params)
        if not model:
            raise ModelLoadError(f"llama.cpp cannot load {model_file}")
        return model

    def _new_context(self, model_file: Path) -> Any:
        llama_cpp = self._llama_cpp
        params = llama_cpp.llama_context_default_params()
        options = self.options
        params.n_ctx = self.context_length * options.max_running
        params.n_batch = params.n_ubatch = options.batch_tokens
        params.n_seq_max = options.max_running
        params.kv_unified = True
        threads = options.threads or os.cpu_count() or 1
        params.n_threads = params.n_threads_batch = threads
        # as the device's backend (llama_cpp.Llama with its defaults), so one request alone decodes alike
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            llama_cpp.llama_model_free(self._model)
            raise ModelLoadError(f"llama.cpp cannot make a context of {params.n_ctx} tokens for {model_file.name}: "
                                 "lower max_running or context_length")
        return ctx

    # -- the Engine protocol ---------------------------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def running(self) -> int:
        """Requests with a slot: prefilling or generating."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def max_running(self) -> int:
        return self.options.max_running

    @property
    def cache_usage(self) -> float:
        """Fraction of the KV cache the running requests hold."""
        held = sum(len(row.slot.ids) + len(row.pending) for row in list(self._rows))
        return held / (self.context_length * self.options.max_running)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """How many tokens the request's prompt is, formatted and tokenized as generate() will."""
        return len(prompt_ids(self.tokenizer, request, self.template))

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        # The queue's own stream, not a wrapper around it: closing it is what frees the request's slot.
        return self._queue.stream(request)

    async def abort(self, request_id: str) -> bool:
        return self._queue.abort(request_id, lambda: [r.channel for r in self._rows])

    def close(self) -> None:
        if not self._queue.close():
            return
        if self._worker is not threading.current_thread():
            self._worker.join()
        llama_cpp = self._llama_cpp
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # -- the scheduler thread --------------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._rows and not self._queue.closed:
                    self._wake.wait()
                if self._queue.closed:
                    break
                admitted = self._queue.take(len(self._free))  # each takes a slot (one that ends at once, none)
            wakes = Wakes()
            for channel in admitted:
                self._admit(channel, wakes)
            wakes.flush()
            if self._rows:
                self._step()
        for row in self._rows:
            row.channel.send(EngineClosedError(f"{self._info.model}: the engine was closed during this request"))
            row.channel.send(END)
        self._rows = []

    def _admit(self, channel: RequestChannel, wakes: Wakes) -> None:
        """Give a request the free slot that already holds the longest prefix of its prompt."""
        if channel.cancelled.is_set():
            channel.send(END, wakes)
            return
        try:
            ids = encode_prompt(self.tokenizer, channel.request, self.template, self.context_length)
        except EdgeRuntimeError as exc:
            channel.send(exc, wakes)
            channel.send(END, wakes)
            return
        slot = max(self._free, key=lambda s: reusable_prefix(s.ids, ids))
        self._free.remove(slot)
        cached = reusable_prefix(slot.ids, ids)
        if cached < len(slot.ids):
            if not self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, cached, -1):
                self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                cached = 0
            del slot.ids[cached:]
        state = SequenceState(channel.request, ids, context_length=self.context_length,
                              eos_token_ids=self.eos_token_ids, detokenizer=self.tokenizer.detokenizer(ids),
                              cached_tokens=cached)
        self._rows.append(_Row(channel, slot, state, ids[cached:]))

    def _step(self) -> None:
        """One ``llama_decode``: every generating row's next token, then prompt chunks in the room left."""
        batch, budget, count = self._batch, self.options.batch_tokens, 0
        wakes = Wakes()
        live: list[_Row] = []
        for row in self._rows:
            if row.channel.cancelled.is_set():
                self._end(row, wakes, aborted=True)
            else:
                live.append(row)
        self._rows = live
        for row in live:
            row.output = -1
            if row.last_token is not None:
                count = self._add(batch, count, row, [row.last_token], logits=True)
        for row in live:
            if row.last_token is None and count < budget:
                chunk = row.pending[:budget - count]
                del row.pending[:len(chunk)]
                count = self._add(batch, count, row, chunk, logits=not row.pending)
        if count == 0:
            wakes.flush()
            return
        batch.n_tokens = count
        code = self._llama_cpp.llama_decode(self._ctx, batch)
        if code != 0:
            reason = "no room in the KV cache" if code == 1 else "aborted" if code == 2 else f"error {code}"
            log.error("llama_decode failed for %d rows: %s", len(live), reason)
            for row in live:
                row.channel.send(GenerationError(f"llama.cpp failed to decode: {reason}"), wakes)
                self._end(row, wakes, aborted=False, forget=True)
            self._rows = []
            wakes.flush()
            return
        kept = []
        for row in live:
            if row.output < 0:  # a prompt still prefilling
                kept.append(row)
                continue
            event = row.state.advance(self._logits(row.output))
            row.channel.send(event, wakes)
            if event.finish_reason is None:
                row.last_token = event.token_id
                kept.append(row)
            else:
                self._end(row, wakes, aborted=False)
        self._rows = kept
        wakes.flush()  # one wake-up per event loop for the whole step

    def _add(self, batch: Any, count: int, row: _Row, tokens: list[int], *, logits: bool) -> int:
        """Put ``tokens`` of ``row``'s sequence into the batch from index ``count``; the last one gives logits
        when ``logits``. Returns the next free index."""
        seq, position = row.slot.seq, len(row.slot.ids)
        token, pos, n_seq, seq_ids, outputs = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        for offset, value in enumerate(tokens):
            index = count + offset
            token[index] = value
            pos[index] = position + offset
            n_seq[index] = 1
            seq_ids[index][0] = seq
            outputs[index] = 0
        end = count + len(tokens)
        if logits and tokens:
            outputs[end - 1] = 1
            row.output = end - 1
        row.slot.ids.extend(tokens)
        return end

    def _logits(self, index: int) -> np.ndarray:
        pointer = self._llama_cpp.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))

    def _end(self, row: _Row, wakes: Wakes, *, aborted: bool, forget: bool = False) -> None:
        """The row leaves its slot (the slot keeps its tokens for a later prompt unless ``forget``)."""
        if aborted:
            if row.channel.aborted:
                row.channel.send(TokenEvent("", None, None, FinishReason.ABORT, row.state.usage), wakes)
            elif self._queue.closed:
                row.channel.send(EngineClosedError(f"{self._info.model}: the engine was closed during this request"),
                                 wakes)
        if forget:  # the cache may not hold what slot.ids says
            self._llama_cpp.llama_memory_seq_rm(self._memory, row.slot.seq, -1, -1)
            row.slot.ids.clear()
        row.channel.send(END, wakes)
        self._free.append(row.slot)


__all__ = ["LlamaCppEngine", "LlamaCppEngineOptions"]
