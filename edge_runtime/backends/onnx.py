"""ONNX bundles on ONNX Runtime: our own KV-cache decode loop on OrtValues.

The graph is an optimum "text-generation-with-past" decoder whose names and cache layout the export wrote
into ``manifest.extra["onnx"]["io"]``. Each step feeds the previous step's ``present.*`` OrtValues as this
step's ``past_key_values.*`` inputs (``run_with_ort_values``), so the cache never round-trips through numpy,
and reads the last row of the logits in place. The default ``EngineOptions(onnx_decoder="auto")`` uses this
loop only where onnxruntime-genai is not installed (or cannot map the graph): genai's generator stepped by our
engine (``onnx_genai``) decoded faster in every paired comparison (BENCHMARKS.md, "Edge runtime") but needs
onnxruntime-genai's wheel on the device (the ``edge-genai`` extra).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.backends.options import DecoderOptions
from edge_runtime.detokenize import WindowDetokenizer
from edge_runtime.errors import (
    BackendUnavailableError,
    GenerationError,
    ManifestError,
    ModelLoadError,
    UnsupportedBundleError,
)
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer

if TYPE_CHECKING:
    import onnxruntime

ARCHITECTURES = frozenset({"gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3", "smollm3"})
"""Source architectures whose ONNX bundles are verified against transformers: each family's tiny toy model
exports (fp32 logits at most 6.4e-5 from transformers' on the check prompts), quantizes to int8 and int4, passes
its gate and decodes greedily like transformers on both decoders (tests/export/onnx/test_architectures.py). What
the graph carries for the newer ones, measured on those toys: Gemma 2's attention and final-logit soft-caps
(traced from the eager attention the source loads; sdpa would drop the attention cap), Gemma 2/3's sliding
windows (a 300-token prompt decodes like transformers, where ignoring the window moves the logits by 13-18),
Gemma's sqrt(hidden) embedding scale, Phi-3's fused qkv / gate_up projections, SmolLM3's NoPE layers and Qwen3's
q/k norms. Gemma graphs take no ``position_ids`` (optimum's Gemma configs derive positions from the cache
length); ``GraphIO`` and genai's config leave that input out."""


@dataclass(frozen=True)
class GraphIO:
    """The decoder graph's names and KV-cache layout, from the manifest."""

    input_ids: str
    attention_mask: str | None
    position_ids: str | None
    logits: str
    past: tuple[str, ...]
    present: tuple[str, ...]
    kv_heads: int
    head_dim: int
    kv_dtype: str

    @classmethod
    def from_manifest(cls, extra: Mapping[str, Any]) -> GraphIO:
        try:
            io = extra["onnx"]["io"]
            kv = io["kv_cache"]
            layers = range(int(kv["num_layers"]))
            past = [kv[name].format(layer=i) for i in layers for name in ("past_key", "past_value")]
            present = [kv[name].format(layer=i) for i in layers for name in ("present_key", "present_value")]
            return cls(
                input_ids=io["input_ids"], attention_mask=io.get("attention_mask"), position_ids=io.get("position_ids"),
                logits=io["logits"], past=tuple(past), present=tuple(present),
                kv_heads=int(kv["num_kv_heads"]), head_dim=int(kv["head_dim"]), kv_dtype=str(kv["dtype"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(
                f"the manifest's extra.onnx.io does not describe the decoder graph ({exc!r}); re-export the bundle"
            ) from exc


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "ONNX bundles run on ONNX Runtime, which is not installed: pip install 'tandem-inference[edge]'"
        ) from exc
    return onnxruntime


_ELEMENT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _last_row(logits: Any) -> np.ndarray:
    """The (vocab,) last row of a (1, len, vocab) logits OrtValue, viewed in place rather than copying the
    whole (len, vocab) block (megabytes after a long prompt). float16 logits are widened to float32."""
    shape = logits.shape()
    dtype = np.dtype(_ELEMENT_TYPES[logits.data_type()])
    vocab, rows = shape[-1], int(np.prod(shape[:-1]))
    buffer = (ctypes.c_char * (vocab * dtype.itemsize)).from_address(
        logits.data_ptr() + (rows - 1) * vocab * dtype.itemsize
    )
    row = np.frombuffer(buffer, dtype=dtype)
    return row if dtype == np.float32 else row.astype(np.float32)


class OnnxDecoder:
    def __init__(self, folder: Path, model_file: str, io: GraphIO, options: DecoderOptions,
                 eos_token_ids: frozenset[int]) -> None:
        ort = _import_onnxruntime()
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        try:
            self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                str(folder / model_file), session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise ModelLoadError(f"ONNX Runtime cannot load {model_file}: {exc}") from exc
        names = {arg.name for arg in self.session.get_inputs()}
        missing = sorted({io.input_ids, *io.past} - names)
        if missing:
            raise UnsupportedBundleError(
                f"{model_file} lacks the inputs its manifest names ({', '.join(missing[:4])}): re-export the bundle"
            )
        self.tokenizer = BundleTokenizer(folder / TOKENIZER_FILE)
        self.vocabulary = self.tokenizer.vocabulary
        self.vocabulary_size = self.tokenizer.vocabulary_size
        self.io = io
        self.context_length = options.context_length
        self.eos_token_ids = eos_token_ids
        self._ort = ort
        self._output_names = [io.logits, *io.present]
        self._ones = np.ones((1, options.context_length), dtype=np.int64)
        self._positions = np.arange(options.context_length, dtype=np.int64)[None, :]
        empty = np.zeros((1, io.kv_heads, 0, io.head_dim), dtype=np.dtype(io.kv_dtype))
        self._empty_past = [ort.OrtValue.ortvalue_from_numpy(empty) for _ in io.past]
        self._past: list[Any] = []
        self._logits: Any = None  # keeps the buffer that the returned row views alive
        self._length = 0

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special)

    def detokenizer(self, prompt_ids: Sequence[int]) -> WindowDetokenizer:
        return self.tokenizer.detokenizer(prompt_ids)

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, int]:
        self._past, self._length = [], 0
        return self._run(token_ids), 0

    def decode_one_token(self, token_id: int) -> np.ndarray:
        return self._run((token_id,))

    def _run(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits after the last of ``token_ids``, which follow the ``self._length`` cached tokens."""
        io, start = self.io, self._length
        end = start + len(token_ids)
        as_value = self._ort.OrtValue.ortvalue_from_numpy  # wraps the array in place, no copy
        ids = np.asarray([token_ids], dtype=np.int64)
        feeds = {io.input_ids: as_value(ids)}
        if io.attention_mask:
            feeds[io.attention_mask] = as_value(self._ones[:, :end])
        if io.position_ids:
            feeds[io.position_ids] = as_value(self._positions[:, start:end])
        feeds.update(zip(io.past, self._past or self._empty_past, strict=True))
        try:
            outputs = self.session.run_with_ort_values(self._output_names, feeds)
        except Exception as exc:
            self._past, self._length = [], 0
            raise GenerationError(f"ONNX Runtime failed to run the decoder: {exc}") from exc
        self._logits, self._past, self._length = outputs[0], list(outputs[1:]), end
        return _last_row(outputs[0])

    def close(self) -> None:
        self._logits, self._past = None, []
        del self.session
