"""The vLLM engine: our Engine protocol over vLLM's V1 ``AsyncLLM``, for replicas with GPUs (the ``gpu`` extra).

    engine = await VllmEngine.create("models/assistant", options=VllmEngineOptions(gpu_memory_utilization=0.8))
    async for event in engine.generate(request):
        ...

Prompts are formatted with OUR chat template and tokenized with OUR tokenizer (the bundle's tokenizer.json),
and vLLM gets the token ids; so the cloud and the device see identical prompts, which mid-stream failover
relies on (the partial answer is appended as ``assistant_prefix`` identically on both sides). vLLM samples,
detokenizes (its own incremental detokenizer over the same tokenizer files) and applies stop strings.

Each vLLM delta becomes one TokenEvent per new token; a delta carrying several tokens (vLLM merges deltas
while the consumer is behind) puts its text on the LAST of them, so the text released never runs ahead of
the token ids released with it (the convention of ``cloud_service.convert.events_from_chunk`` too).

The event loop: an ``AsyncLLM`` belongs to the event loop that first runs it (its output handler is a task
of that loop). ``VllmEngine.create`` builds it inside the running loop, as vLLM's own API server does; a
VllmEngine built synchronously binds to the loop of its first ``generate``. Using it from another loop
afterwards raises RuntimeError (e.g. one engine across several ``asyncio.run`` calls: use one
``asyncio.Runner`` or the server's loop).

API read for this adapter: vLLM 0.33.0 (wheel ``vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64``, commit
g4ba787ec9), cross-checked against the 0.10.0, 0.11.0, 0.12.0, 0.14.0, 0.17.0, 0.20.0 and 0.25.0 wheels (our
floor is ``vllm>=0.10``). Source paths, all under ``vllm/``:

- ``v1/engine/async_llm.py``: ``AsyncLLM.from_engine_args(engine_args, ..., stat_loggers=None)``;
  ``generate(prompt, sampling_params, request_id)`` is an async generator of ``RequestOutput`` that aborts
  the request itself on CancelledError/GeneratorExit and wraps unexpected errors in EngineGenerateError;
  ``abort(request_id)`` (an external id; since 0.14 vLLM suffixes its internal ids and maps external ids to
  them); ``shutdown()``; ``model_config`` (whose ``max_model_len`` vLLM may lower at startup, 0.20+).
- ``v1/engine/output_processor.py``: since 0.11 an external abort pushes a final output with
  ``finish_reason="abort"``; in 0.10 it does not and the stream would wait forever, which is why our
  ``abort`` ends the stream itself (see ``_Flight``). ``RequestOutputCollector`` merges DELTA outputs while
  the consumer is behind (several tokens per delta).
- ``v1/engine/exceptions.py`` (EngineDeadError, EngineGenerateError) and ``exceptions.py``
  (VLLMValidationError is a ValueError from 0.14 to 0.25; by 0.33 it derives from VLLMClientError and no
  longer from ValueError; 0.33 adds QueueOverflowError and MaxQueuedTokensError of admission control).
- ``sampling_params.py``: ``top_k=0`` disables top-k (``-1`` is still accepted "quietly");
  ``temperature < 1e-5`` is greedy; ``logprobs=0`` returns the sampled token's logprob only (the sampled
  token always comes first, ``logprobs+1`` entries at most); 0.25+ rejects ``temperature > 2``;
  ``RequestOutputKind.DELTA``.
- ``logprobs.py`` / ``v1/engine/logprobs.py``: per position a ``dict[token_id, Logprob(logprob, rank,
  decoded_token)]``; the values are the raw model distribution by default (``logprobs_mode="raw_logprobs"``,
  before temperature and top-k/top-p), as our TokenEvent.logprob is defined.
- ``inputs/``: ``TokensPrompt(prompt_token_ids=...)``; from 0.20 ``tokens_input(ids)`` builds the rendered
  engine input directly (raw prompts, TokensPrompt included, log a deprecation there), so it is preferred.
- ``outputs.py``: ``RequestOutput.outputs[0]`` (``CompletionOutput.text/token_ids/logprobs/finish_reason``),
  ``num_cached_tokens``; finish reasons "stop", "length", "abort", "error" (0.14+), "repetition" (0.17+).
- ``engine/arg_utils.py``: ``AsyncEngineArgs`` fields model, tensor_parallel_size, pipeline_parallel_size,
  gpu_memory_utilization, max_model_len, enable_prefix_caching, dtype, max_num_seqs, seed...
- ``v1/metrics/loggers.py``: ``StatLoggerBase`` (documented as user-extensible but "not stable"): our load
  logger reads ``SchedulerStats.kv_cache_usage`` for ``cache_usage``; without it the value is 0.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.chat import TokenizerFacts, load_chat_template
from edge_runtime.engine import EngineInfo
from edge_runtime.errors import (
    BackendUnavailableError,
    EdgeRuntimeError,
    EngineBusyError,
    EngineClosedError,
    GenerationError,
    InvalidRequestError,
    ModelLoadError,
)
from edge_runtime.generation import encode_prompt, prompt_ids
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer
from edge_runtime.types import FinishReason, GenerationRequest, SamplingParams, TokenEvent, Usage

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'tandem-inference[cloud,gpu]'"

_RESERVED_ENGINE_ARGS = frozenset({
    "model", "tokenizer", "skip_tokenizer_init", "tensor_parallel_size", "pipeline_parallel_size",
    "gpu_memory_utilization", "max_model_len", "enable_prefix_caching", "dtype", "max_num_seqs",
})
"""Keys extra_engine_args may not set: our own fields, and what would make vLLM tokenize or detokenize with
anything but the model folder's tokenizer (the prompts and texts must match the device's)."""

_FINISH_FROM_VLLM = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "abort": FinishReason.ABORT,
    "repetition": FinishReason.STOP,  # vLLM's repetition detection (off unless asked for) ended the answer
}


DEFAULT_MAX_NUM_SEQS = 256
"""What a replica reports as max_running when vLLM does not say (vLLM's long-standing default)."""

@dataclass(frozen=True)
class VllmEngineOptions:
    tensor_parallel_size: int = 1
    """GPUs each layer is split across."""
    pipeline_parallel_size: int = 1
    """GPUs the layers are spread over."""
    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU's memory vLLM may take (weights, activations, KV cache)."""
    max_model_len: int | None = None
    """Tokens per sequence; None: the model's own (vLLM may lower it to what the KV cache holds)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (reported as Usage.cached_tokens)."""
    dtype: str = "auto"
    """"auto" (the checkpoint's), "float16", "bfloat16", "float32" ("half"/"float" too)."""
    max_num_seqs: int | None = None
    """Sequences scheduled together; None: vLLM's default."""
    extra_engine_args: dict[str, Any] = field(default_factory=dict)
    """Further ``vllm.AsyncEngineArgs`` fields, passed through as they are (e.g. {"enforce_eager": True})."""

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InvalidRequestError(f"{name} must be an integer >= 1, got {value!r}")
        value = self.gpu_memory_utilization
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
            raise InvalidRequestError(f"gpu_memory_utilization must be a number in (0, 1], got {value!r}")
        for name in ("max_model_len", "max_num_seqs"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise InvalidRequestError(f"{name} must be an integer >= 1 or None, got {value!r}")
        if not isinstance(self.enable_prefix_caching, bool):
            raise InvalidRequestError(
                f"enable_prefix_caching must be true or false, got {self.enable_prefix_caching!r}"
            )
        if self.dtype not in ("auto", "float16", "bfloat16", "float32", "half", "float"):
            raise InvalidRequestError(f"dtype must be auto, float16, bfloat16 or float32, got {self.dtype!r}")
        extra = self.extra_engine_args
        if not isinstance(extra, Mapping) or any(not isinstance(key, str) for key in extra):
            raise InvalidRequestError(f"extra_engine_args must be a table of AsyncEngineArgs fields, got {extra!r}")
        reserved = sorted(_RESERVED_ENGINE_ARGS & set(self.extra_engine_args))
        if reserved:
            raise InvalidRequestError(
                f"extra_engine_args may not set {', '.join(reserved)}: use the VllmEngineOptions fields (the "
                "model and its tokenizer are the model folder's)"
            )
        object.__setattr__(self, "extra_engine_args", dict(self.extra_engine_args))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- pure mappings (no vllm import), unit-tested without vLLM ---------------------------------------------------


def engine_args_kwargs(model_path: str | os.PathLike[str], options: VllmEngineOptions) -> dict[str, Any]:
    """The keyword arguments of ``vllm.AsyncEngineArgs`` for a model folder and our options."""
    kwargs: dict[str, Any] = {
        "model": str(model_path),
        "tensor_parallel_size": options.tensor_parallel_size,
        "pipeline_parallel_size": options.pipeline_parallel_size,
        "gpu_memory_utilization": float(options.gpu_memory_utilization),
        "enable_prefix_caching": options.enable_prefix_caching,
        "dtype": options.dtype,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.max_num_seqs is not None:
        kwargs["max_num_seqs"] = options.max_num_seqs
    kwargs.update(options.extra_engine_args)
    return kwargs


def to_vllm_sampling_kwargs(params: SamplingParams, room: int) -> dict[str, Any]:
    """The keyword arguments of ``vllm.SamplingParams`` for our sampling parameters (the engine adds
    ``output_kind=RequestOutputKind.DELTA``, the one value that needs vLLM imported).

    ``room`` is the context left after the prompt: ``max_tokens=None`` means all of it, a larger max_tokens is
    capped to it (the same limit as the edge engines'). ``temperature=0`` is greedy in vLLM too (it then
    ignores top_p/top_k; the seed is dropped, so no per-request generator is made). ``top_k=0`` is
    "disabled" in vLLM >= 0.10 as in ours. ``logprobs=0``: vLLM returns the chosen token's logprob only.
    """
    if not _is_int(room) or room < 1:
        raise InvalidRequestError(f"no room left in the context for a generated token (room={room!r})")
    greedy = params.temperature == 0
    return {
        "n": 1,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": params.top_k,
        "max_tokens": room if params.max_tokens is None else min(params.max_tokens, room),
        "stop": list(params.stop),
        "seed": None if greedy else params.seed,
        "ignore_eos": params.ignore_eos,
        "logprobs": 0,
        "detokenize": True,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
    }


def finish_reason_from_vllm(reason: str | FinishReason | None) -> FinishReason | None:
    """vLLM's ``CompletionOutput.finish_reason`` as ours; "error" (a request-level failure inside vLLM)
    raises GenerationError."""
    if reason is None or isinstance(reason, FinishReason):
        return reason
    text = str(reason)
    if text == "error":
        raise GenerationError("vLLM ended the request with an internal error (finish_reason='error')")
    finish = _FINISH_FROM_VLLM.get(text)
    if finish is None:
        log.warning("unknown vLLM finish_reason %r; reporting it as stop", text)
        return FinishReason.STOP
    return finish


def _chosen_logprob(position: Any, token: int) -> float:
    """The chosen token's logprob from one position of vLLM's logprobs: a mapping token_id -> Logprob
    (``.logprob``) or float. With logprobs=0 the mapping holds the chosen token only; when it lacks the token,
    the first entry is used (vLLM inserts the sampled token first). NaN when vLLM gave nothing."""
    if position is None:
        return math.nan
    if isinstance(position, int | float) and not isinstance(position, bool):
        return float(position)
    entry = None
    if isinstance(position, Mapping) or hasattr(position, "get"):
        entry = position.get(token)
        if entry is None and len(position):
            entry = next(iter(position.values()))
    value = getattr(entry, "logprob", entry)
    return float(value) if isinstance(value, int | float) else math.nan


def events_from_delta(
    text: str,
    token_ids: Sequence[int],
    logprobs: Sequence[Any] | None,
    finish_reason: str | FinishReason | None,
    usage: Usage | None = None,
) -> list[TokenEvent]:
    """One vLLM DELTA output as TokenEvents: one per new token, the delta's text on the last of them; the last
    also carries the finish reason and ``usage`` when the delta finishes the request.

    ``logprobs`` is ``CompletionOutput.logprobs`` (one position per new token, aligned from the end when it is
    shorter). A delta without tokens gives no event, unless it finishes the request (vLLM's closing output of
    an abort): then one closing event without a token. A token-less delta's text is lost here; the engine
    carries it over to the next delta (vLLM only releases text with tokens, or on the finishing output).
    """
    finish = finish_reason_from_vllm(finish_reason)
    ids = [int(t) for t in token_ids]
    if not ids:
        if finish is None:
            return []
        return [TokenEvent(text, None, None, finish, usage)]
    positions: list[Any] = list(logprobs) if logprobs is not None else []
    positions = [None] * (len(ids) - len(positions)) + positions[-len(ids):]
    values = [_chosen_logprob(position, token) for position, token in zip(positions, ids, strict=True)]
    events = [TokenEvent("", token, logprob) for token, logprob in zip(ids[:-1], values[:-1], strict=True)]
    events.append(TokenEvent(text, ids[-1], values[-1], finish, usage if finish is not None else None))
    return events


def translate_vllm_error(exc: BaseException) -> EdgeRuntimeError:
    """vLLM's exception as ours (the caller raises it ``from exc``). Classes are matched by name among those
    of the ``vllm`` package in the exception's MRO, so this works whichever module a vLLM version keeps them
    in (and is testable without vLLM)."""
    if isinstance(exc, EdgeRuntimeError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.split(".")[0] == "vllm"}
    message = str(exc) or type(exc).__name__
    if "EngineDeadError" in names:
        return GenerationError(f"the vLLM engine died ({message}); this replica must be restarted")
    if names & {"QueueOverflowError", "MaxQueuedTokensError"}:
        return EngineBusyError(f"vLLM is not admitting more requests now ({message}); retry later")
    if "EngineGenerateError" in names:
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else message
        return GenerationError(f"vLLM failed during generation: {detail}")
    if names & {"VLLMClientError", "VLLMValidationError"} or isinstance(exc, ValueError):
        return InvalidRequestError(f"vLLM rejected the request: {message}")
    return GenerationError(f"vLLM failed: {type(exc).__name__}: {message}")


# -- the vLLM side, imported lazily -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _VllmApi:
    """What the engine uses of vLLM, resolved once per engine (so tests can substitute a fake)."""

    version: str
    AsyncLLM: Any
    AsyncEngineArgs: Any
    SamplingParams: Any
    delta: Any
    """RequestOutputKind.DELTA"""
    make_prompt: Callable[[list[int]], Any]
    stat_logger_base: Any | None = None
    default_stat_loggers: tuple[Any, ...] = ()
    """Loggers to pass along ours where custom loggers replace vLLM's defaults (0.10.x)."""


def _load_vllm() -> _VllmApi:
    try:
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VllmSamplingParams
        from vllm.v1.engine.async_llm import AsyncLLM
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"the vLLM engine needs vllm, which is not installed or does not load here ({exc}): {INSTALL_HINT} "
            "on a machine with a CUDA GPU"
        ) from exc
    try:
        from vllm.inputs import tokens_input  # 0.20+: the rendered engine input, no deprecation warning

        def make_prompt(ids: list[int]) -> Any:
            return tokens_input(ids)
    except ImportError:
        from vllm.inputs import TokensPrompt

        def make_prompt(ids: list[int]) -> Any:
            return TokensPrompt(prompt_token_ids=ids)
    base: Any = None
    defaults: tuple[Any, ...] = ()
    try:
        from vllm.v1.metrics.loggers import LoggingStatLogger, StatLoggerBase

        base = StatLoggerBase
        version_tuple = tuple(getattr(vllm, "__version_tuple__", ())[:2])
        if version_tuple and all(isinstance(v, int) for v in version_tuple) and version_tuple < (0, 11):
            defaults = (LoggingStatLogger,)  # 0.10 drops its periodic log when custom loggers are given
    except ImportError:
        pass
    return _VllmApi(
        version=str(getattr(vllm, "__version__", "unknown")),
        AsyncLLM=AsyncLLM,
        AsyncEngineArgs=AsyncEngineArgs,
        SamplingParams=VllmSamplingParams,
        delta=RequestOutputKind.DELTA,
        make_prompt=make_prompt,
        stat_logger_base=base,
        default_stat_loggers=defaults,
    )


class _LoadSink:
    """KV cache usage per vLLM engine core, as last reported through the stat logger."""

    def __init__(self) -> None:
        self.cache_usage: dict[int, float] = {}

    def record(self, engine_index: int, scheduler_stats: Any) -> None:
        usage = getattr(scheduler_stats, "kv_cache_usage", None)
        if usage is None:
            usage = getattr(scheduler_stats, "gpu_cache_usage", None)  # the field's name before 0.10
        if isinstance(usage, int | float):
            self.cache_usage[engine_index] = float(usage)

    def value(self) -> float:
        return sum(self.cache_usage.values()) / len(self.cache_usage) if self.cache_usage else 0.0


def _stat_logger_factory(base: Any, sink: _LoadSink) -> Callable[..., Any]:
    """A vLLM stat logger factory ``(vllm_config, engine_index) -> StatLoggerBase`` feeding ``sink``."""

    class TandemLoadLogger(base):  # type: ignore[misc, valid-type]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any = None, iteration_stats: Any = None, *args: Any, **kwargs: Any) -> None:
            # An exception here would kill vLLM's output handler (and so the engine): never raise.
            try:
                if scheduler_stats is not None:
                    sink.record(self.engine_index, scheduler_stats)
            except Exception:  # pragma: no cover - defensive
                pass

        def log_engine_initialized(self) -> None:
            pass

    def factory(vllm_config: Any, engine_index: int = 0) -> Any:
        return TandemLoadLogger(vllm_config, engine_index)

    return factory


# -- the engine -------------------------------------------------------------------------------------------------

_ABORTED = object()
"""Put on a flight's queue by abort(): the stream closes with an ABORT event."""
_ENDED = object()
"""Put on a flight's queue when vLLM's stream ended (normally it has delivered a finished output before)."""
_STOP_TIMEOUT_S = 10.0
"""How long a closing stream waits for vLLM's generate to abort the request (it only sends a message)."""
_SHUTDOWN_TIMEOUT_S = 120.0


@dataclass(eq=False)
class _Flight:
    """One request between ``generate`` and vLLM. A pump task iterates vLLM's stream into ``queue`` so that
    abort() and close() can end our stream whatever vLLM does (vLLM 0.10 never ends an externally aborted
    stream; a closed engine ends none)."""

    request_id: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    started: bool = False
    """vLLM produced an output for it: running rather than waiting."""
    vllm_done: bool = False
    """vLLM's stream ended by itself (finished or raised): nothing to abort there."""
    aborted: bool = False


@dataclass
class _StreamState:
    prompt_tokens: int
    generated: int = 0
    cached: int = 0
    carried: str = ""

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.generated, self.cached)

    def feed(self, output: Any) -> tuple[list[TokenEvent], bool]:
        """(the events of one RequestOutput, whether it finished the request)."""
        completion = output.outputs[0]
        token_ids = list(completion.token_ids or ())
        self.cached = max(self.cached, int(getattr(output, "num_cached_tokens", None) or 0))
        finish = finish_reason_from_vllm(completion.finish_reason)
        if finish is None and getattr(output, "finished", False):
            log.warning("vLLM finished request %s without a finish reason; reporting stop", output.request_id)
            finish = FinishReason.STOP
        self.generated += len(token_ids)
        text = self.carried + (completion.text or "")
        events = events_from_delta(text, token_ids, completion.logprobs, finish,
                                   self.usage() if finish is not None else None)
        self.carried = "" if events else text
        return events, finish is not None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class VllmEngine:
    """An Engine over a Hugging Face model folder served by vLLM's AsyncLLM (continuous batching on GPUs).

    Prefer ``await VllmEngine.create(...)`` inside the loop that will serve it; the constructor works outside
    a loop too (vLLM then starts its output handler with the first request, on that request's loop).
    Construction loads the model and blocks for as long as that takes.
    """

    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None, version: str = "",
                 options: VllmEngineOptions | None = None) -> None:
        self.options = options if options is not None else VllmEngineOptions()
        if not isinstance(self.options, VllmEngineOptions):
            raise InvalidRequestError(f"options must be VllmEngineOptions, got {type(self.options).__name__}")
        self._api = self._load_vllm()
        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder} is not a model folder: it has no config.json")
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelLoadError(f"{folder} has no {TOKENIZER_FILE}; the vLLM engine tokenizes with it")
        self.tokenizer = BundleTokenizer(folder / TOKENIZER_FILE)
        self.template = load_chat_template(folder, None, TokenizerFacts.read(folder))
        self._load = _LoadSink()
        self._flights: dict[str, _Flight] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._loop = _running_loop()
        self._llm = self._start_llm(folder)
        self.context_length = self._context_length(folder)
        self._info = EngineInfo(
            model=name or folder.name, backend="vllm", context_length=self.context_length, version=version,
            details={
                "path": str(folder), "dtype": self.options.dtype, "vllm_version": self._api.version,
                "tensor_parallel_size": self.options.tensor_parallel_size,
                "pipeline_parallel_size": self.options.pipeline_parallel_size,
                **({"max_running": n} if (n := self._max_num_seqs()) else {}),
            },
            vocabulary=self.tokenizer.vocabulary,
        )

    @classmethod
    async def create(cls, model_path: str | os.PathLike[str], *, name: str | None = None, version: str = "",
                     options: VllmEngineOptions | None = None) -> VllmEngine:
        """Build the engine in the running event loop, which it then belongs to (as vLLM's own API server
        builds its AsyncLLM). The loop is blocked while the model loads."""
        return cls(model_path, name=name, version=version, options=options)

    # -- vLLM setup (methods, so tests can substitute a fake vLLM) ---------------------------------------------

    def _load_vllm(self) -> _VllmApi:
        return _load_vllm()

    def _start_llm(self, folder: Path) -> Any:
        api = self._api
        try:
            engine_args = api.AsyncEngineArgs(**engine_args_kwargs(folder, self.options))
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"vLLM rejected the engine options (extra_engine_args?): {exc}") from exc
        loggers: list[Any] = []
        if api.stat_logger_base is not None:
            loggers = [*api.default_stat_loggers, _stat_logger_factory(api.stat_logger_base, self._load)]
        try:
            return api.AsyncLLM.from_engine_args(engine_args, stat_loggers=loggers or None)
        except EdgeRuntimeError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"vLLM could not start {folder}: {type(exc).__name__}: {exc}") from exc

    def _context_length(self, folder: Path) -> int:
        """vLLM's max_model_len after startup (it can lower the configured one to fit the KV cache)."""
        config = getattr(self._llm, "model_config", None)
        if config is None:
            config = getattr(getattr(self._llm, "vllm_config", None), "model_config", None)
        value = getattr(config, "max_model_len", None)
        if _is_int(value) and value > 0:
            return int(value)
        if self.options.max_model_len is not None:  # pragma: no cover - every vLLM exposes model_config
            return self.options.max_model_len
        raise ModelLoadError(f"vLLM did not report the context length of {folder}")  # pragma: no cover

    def _max_num_seqs(self) -> int | None:
        scheduler = getattr(getattr(self._llm, "vllm_config", None), "scheduler_config", None)
        value = getattr(scheduler, "max_num_seqs", None)
        return int(value) if _is_int(value) else self.options.max_num_seqs

    # -- the Engine protocol ---------------------------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def running(self) -> int:
        """Requests vLLM has produced output for and whose stream is still open (counted here: vLLM's
        scheduler stats only arrive with outputs, so they go stale when it falls idle)."""
        return sum(1 for flight in list(self._flights.values()) if flight.started)

    @property
    def waiting(self) -> int:
        """Requests handed to vLLM that have no output yet (queued, or in prefill)."""
        return sum(1 for flight in list(self._flights.values()) if not flight.started)

    @property
    def cache_usage(self) -> float:
        """vLLM's KV cache usage (0..1) as last reported by its scheduler stats; 0.0 when idle, and always
        0.0 if this vLLM version's stat logger interface was not available (or log stats are disabled)."""
        return self._load.value() if self._flights else 0.0

    @property
    def max_running(self) -> int:
        """Sequences vLLM schedules at once (its max_num_seqs)."""
        return self._max_num_seqs() or DEFAULT_MAX_NUM_SEQS

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """How many tokens the request's prompt is, formatted and tokenized as generate() will."""
        return len(prompt_ids(self.tokenizer, request, self.template))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        if self._closed:
            raise EngineClosedError(f"{self._info.model}: the engine is closed")
        loop = self._bind_loop()
        ids = encode_prompt(self.tokenizer, request, self.template, self.context_length)
        kwargs = to_vllm_sampling_kwargs(request.sampling, self.context_length - len(ids))
        try:
            params = self._api.SamplingParams(**kwargs, output_kind=self._api.delta)
            prompt = self._api.make_prompt(ids)
        except Exception as exc:
            raise translate_vllm_error(exc) from exc
        request_id = request.request_id
        if request_id in self._flights:
            raise InvalidRequestError(f"request_id {request_id!r} is already running on this engine")
        flight = _Flight(request_id, loop)
        self._flights[request_id] = flight
        pump = loop.create_task(self._pump(flight, prompt, params), name=f"tandem-vllm-{request_id}")
        state = _StreamState(prompt_tokens=len(ids))
        try:
            while True:
                item = await flight.queue.get()
                if item is _ABORTED:
                    yield TokenEvent(state.carried, None, None, FinishReason.ABORT, state.usage())
                    return
                if item is _ENDED:
                    raise GenerationError("vLLM ended the stream without a finish reason")
                if isinstance(item, BaseException):
                    raise item
                events, finished = state.feed(item)
                for event in events:
                    yield event
                if finished:
                    return
        finally:
            await self._end_flight(flight, pump)

    async def _pump(self, flight: _Flight, prompt: Any, params: Any) -> None:
        """Iterate vLLM's stream into the flight's queue. Cancelled when our stream closes first: vLLM's
        generate then aborts the request itself."""
        try:
            async for output in self._llm.generate(prompt, params, flight.request_id):
                flight.started = True
                flight.queue.put_nowait(output)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            flight.vllm_done = True
            error = translate_vllm_error(exc)
            if error is not exc:
                error.__cause__ = exc
            flight.queue.put_nowait(error)
        else:
            flight.vllm_done = True
            flight.queue.put_nowait(_ENDED)

    async def _end_flight(self, flight: _Flight, pump: asyncio.Task[None]) -> None:
        """Our stream is over (finished, aborted, failed, or the caller left): stop the pump and make sure
        vLLM forgets the request before the flight leaves the running/waiting counts."""
        try:
            if not pump.done():
                pump.cancel()  # vLLM's generate aborts the request on CancelledError
                await asyncio.wait([pump], timeout=_STOP_TIMEOUT_S)
                if not pump.done():
                    log.warning("vLLM's stream of %s did not stop within %ss", flight.request_id, _STOP_TIMEOUT_S)
            if not flight.vllm_done and not self._closed:
                # Also by external id: a pump cancelled inside vLLM's add_request leaves vLLM no handle to
                # abort with (0.14+), and an abort(id) that ran before vLLM registered the request did
                # nothing; aborting a request vLLM no longer knows is a no-op.
                try:
                    await self._llm.abort(flight.request_id)
                except Exception:
                    log.warning("aborting request %s in vLLM failed", flight.request_id, exc_info=True)
        finally:
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                log.debug("vLLM pump of %s ended with %r", flight.request_id, pump.exception())
            if self._flights.get(flight.request_id) is flight:
                del self._flights[flight.request_id]

    async def abort(self, request_id: str) -> bool:
        flight = self._flights.get(request_id)
        if flight is None or flight.aborted or self._closed:
            return False
        self._bind_loop()
        flight.aborted = True
        flight.queue.put_nowait(_ABORTED)  # before vLLM's own closing output (0.11+), so ours comes first
        try:
            await self._llm.abort(request_id)
        except Exception:
            log.warning("aborting request %s in vLLM failed", request_id, exc_info=True)
        return True

    def close(self) -> None:
        """Shut vLLM down; open streams end with EngineClosedError. Callable from any thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for flight in list(self._flights.values()):
            self._post(flight, EngineClosedError(f"{self._info.model}: the engine was closed during this request"))
        loop = self._loop
        try:
            if loop is not None and loop.is_running() and _running_loop() is not loop:
                # vLLM's shutdown cancels its output handler task: do it on that task's loop.
                asyncio.run_coroutine_threadsafe(self._shutdown_on_loop(), loop).result(timeout=_SHUTDOWN_TIMEOUT_S)
            else:
                self._llm.shutdown()
        except Exception:
            log.warning("vLLM shutdown failed", exc_info=True)

    async def _shutdown_on_loop(self) -> None:
        self._llm.shutdown()

    # -- helpers ---------------------------------------------------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                f"{self._info.model}: this VllmEngine belongs to the event loop it first ran on (vLLM's "
                "AsyncLLM runs its output handler there); use it from that loop only, e.g. build it with "
                "`await VllmEngine.create(...)` in the server's loop or use one asyncio.Runner"
            )
        return loop

    @staticmethod
    def _post(flight: _Flight, item: Any) -> None:
        """Put an item on a flight's queue from any thread."""
        if _running_loop() is flight.loop:
            flight.queue.put_nowait(item)
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is listening any more
            flight.loop.call_soon_threadsafe(flight.queue.put_nowait, item)
