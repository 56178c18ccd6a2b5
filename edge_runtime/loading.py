"""load_bundle: verify a bundle, check that it fits in memory, and return a (lazily loading) engine.

    engine = load_bundle("assistant-q4/", trusted_keys=[load_public_key("tandem.pub")],
                         options=EngineOptions(context_length=2048, threads=4))

Order matters: the signature and every file's sha256 are checked before a byte of the model is parsed; the
memory check runs on the manifest's own estimate (weights + KV bytes per token x context), here and again
when the model is actually loaded (memory may have gone in between).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.backends.options import DecoderOptions
from edge_runtime.bundle import Manifest, verify_bundle
from edge_runtime.chat import TokenizerFacts, load_chat_template
from edge_runtime.decoder import Decoder
from edge_runtime.engine import EngineInfo
from edge_runtime.errors import BackendUnavailableError, InvalidRequestError, ModelLoadError, UnsupportedBundleError
from edge_runtime.local_engine import DEFAULT_MAX_WAITING, LocalEngine
from edge_runtime.memory import MemoryProbe, available_memory, check_memory
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

BACKENDS = {"gguf": "llama.cpp", "onnx": "onnxruntime"}
"""Bundle format -> the runtime library that runs it."""
ONNX_DECODERS = ("auto", "genai", "loop")
"""How ONNX bundles decode: "loop" our own KV-cache loop on onnxruntime (``backends.onnx``), "genai"
onnxruntime-genai's generator stepped by our engine (``backends.onnx_genai``), "auto" genai where it is
installed and maps the bundle's graph, else the loop."""


@dataclass(frozen=True)
class EngineOptions:
    context_length: int | None = None
    """Tokens of KV cache; None: the bundle's context length. Must not exceed it."""
    threads: int | None = None
    """CPU threads for decoding; None: the runtime library's default."""
    batch_threads: int | None = None
    """CPU threads for the prompt (llama.cpp only; ONNX Runtime uses ``threads`` for both); None: ``threads``.
    On small devices decoding with one thread fewer than prefill leaves a core to the app (measured in
    BENCHMARKS.md, "Edge runtime")."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Requests that may queue behind the running one."""
    allow_insufficient_memory: bool = False
    """Load even when the memory estimate exceeds available memory (the OS may then swap or kill the app)."""
    lazy: bool = True
    """Load the model on the first request (True) or before load_bundle returns (False)."""
    overlap_events: bool | None = None
    """Turn each token into its event (logprob, text, stop sequences) on a second thread while the next decode
    step runs. None: where decoding leaves a core free for it (decode threads < CPU cores); where the runtime
    computes on every core, that thread would only take turns with it (measured in BENCHMARKS.md)."""
    onnx_decoder: str = "auto"
    """ONNX bundles only: one of ONNX_DECODERS. The default, "auto", steps onnxruntime-genai's generator where
    it is installed (the ``edge-genai`` extra) and maps the bundle, else runs our loop: through our engine the
    generator decoded faster than the loop in every paired run (BENCHMARKS.md, "Edge runtime"), while the loop
    spares a device genai's wheel."""

    def __post_init__(self) -> None:
        if self.context_length is not None and (not isinstance(self.context_length, int) or self.context_length < 2):
            raise InvalidRequestError(f"context_length must be an integer >= 2, got {self.context_length!r}")
        for name in ("threads", "batch_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidRequestError(f"{name} must be an integer >= 1 or None, got {value!r}")
        if self.overlap_events is not None and not isinstance(self.overlap_events, bool):
            raise InvalidRequestError(f"overlap_events must be True, False or None, got {self.overlap_events!r}")
        if not isinstance(self.max_waiting, int) or self.max_waiting < 0:
            raise InvalidRequestError(f"max_waiting must be an integer >= 0, got {self.max_waiting!r}")
        if self.onnx_decoder not in ONNX_DECODERS:
            raise InvalidRequestError(
                f"onnx_decoder must be one of {', '.join(ONNX_DECODERS)}, got {self.onnx_decoder!r}"
            )


def _overlap_events(fmt: str, options: EngineOptions) -> bool:
    """EngineOptions.overlap_events resolved: None means "when the decode threads leave a core free"."""
    if options.overlap_events is not None:
        return options.overlap_events
    cores = os.cpu_count() or 1
    # the runtimes' own defaults: llama-cpp-python decodes on half the cores, ONNX Runtime on all of them
    threads = options.threads or (max(1, cores // 2) if fmt == "gguf" else cores)
    return threads < cores


def _supported_architectures(fmt: str) -> frozenset[str]:
    if fmt == "gguf":
        from edge_runtime.backends.gguf import ARCHITECTURES
    else:
        from edge_runtime.backends.onnx import ARCHITECTURES
    return ARCHITECTURES


def _decoder_factory(
    folder: Path, manifest: Manifest, options: DecoderOptions, eos_ids: frozenset[int], onnx_decoder: str
) -> Callable[[], Decoder]:
    if manifest.format == "gguf":
        from edge_runtime.backends.gguf import LlamaCppDecoder

        return lambda: LlamaCppDecoder(folder / manifest.model_file, options, eos_ids)
    from edge_runtime.backends.onnx import GraphIO, OnnxDecoder

    io = GraphIO.from_manifest(manifest.extra)

    def open_loop() -> Decoder:
        return OnnxDecoder(folder, manifest.model_file, io, options, eos_ids)

    if onnx_decoder == "loop":
        return open_loop
    from edge_runtime.backends.onnx_genai import GenaiDecoder

    def open_genai() -> Decoder:
        if onnx_decoder == "genai":
            return GenaiDecoder(folder, manifest, options, eos_ids)
        try:
            return GenaiDecoder(folder, manifest, options, eos_ids)
        except (BackendUnavailableError, UnsupportedBundleError, ModelLoadError) as exc:
            log.debug("%s decodes with the onnxruntime loop, not onnxruntime-genai: %s", manifest.name, exc)
            return open_loop()

    return open_genai


def load_bundle(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Iterable[Ed25519PublicKey],
    options: EngineOptions | None = None,
    memory_probe: MemoryProbe = available_memory,
) -> LocalEngine:
    """Verify the bundle at ``path`` and return an engine for it (the model loads lazily unless
    ``options.lazy`` is False). ``memory_probe`` returns available bytes (host apps can inject their own).

    Raises, from ``edge_runtime.errors``: BundleNotFoundError, SignatureError, ManifestError,
    BundleIntegrityError, UnsupportedBundleError, InsufficientMemoryError, InvalidRequestError (options);
    with ``lazy=False`` also ModelLoadError and BackendUnavailableError.
    """
    options = options or EngineOptions()
    folder = Path(path)
    manifest = verify_bundle(folder, trusted_keys)
    if manifest.format not in BACKENDS:
        raise UnsupportedBundleError(
            f"{manifest.name} is a {manifest.format!r} bundle; this runtime runs gguf and onnx bundles"
        )
    supported = _supported_architectures(manifest.format)
    if manifest.architecture not in supported:
        raise UnsupportedBundleError(
            f"{manifest.name} is a {manifest.architecture!r} model; the {BACKENDS[manifest.format]} backend runs "
            f"{', '.join(sorted(supported))}: export it for a supported architecture or use the cloud"
        )
    context = options.context_length or manifest.context_length
    if context > manifest.context_length:
        raise InvalidRequestError(
            f"context_length={context} exceeds the {manifest.context_length} tokens {manifest.name} was trained for"
        )

    def check() -> None:
        if not options.allow_insufficient_memory:
            check_memory(manifest, context, memory_probe)

    check()
    facts = TokenizerFacts.read(folder)
    decoder_options = DecoderOptions(context, options.threads, options.batch_threads)
    open_decoder = _decoder_factory(folder, manifest, decoder_options, facts.eos_token_ids, options.onnx_decoder)

    def open_checked() -> Decoder:
        check()
        return open_decoder()

    info = EngineInfo(
        model=manifest.name,
        backend=BACKENDS[manifest.format],
        context_length=context,
        version=f"{manifest.files[manifest.model_file].sha256[:12]}",
        details={
            "format": manifest.format,
            "quantization": manifest.quantization,
            "architecture": manifest.architecture,
            "parameters": manifest.parameters,
            "path": str(folder),
        },
    )
    if (folder / TOKENIZER_FILE).is_file():  # the backends tokenize with it (else llama.cpp's own: unknown)
        info = dataclasses.replace(info, vocabulary=BundleTokenizer(folder / TOKENIZER_FILE).vocabulary)
    template = load_chat_template(folder, manifest.chat_template, facts)
    engine = LocalEngine(info, open_checked, template, manifest=manifest, max_waiting=options.max_waiting,
                         overlap_events=_overlap_events(manifest.format, options))
    if not options.lazy:
        engine.load()
    return engine
