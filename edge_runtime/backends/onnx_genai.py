"""ONNX bundles on onnxruntime-genai's generator, stepped one token at a time by our engine.

The generator runs the graph and keeps the KV cache in C++; the engine still picks every token: each step
``append_tokens`` feeds the chosen token (running the model on it) and ``get_logits`` hands back the
(1, 1, vocab) float32 logits of the last position, which ``SequenceState`` samples from. So tokenizer, chat
template, detokenizer, stop strings, the seeded sampler and its logprobs are the engine's, exactly as with
the Python loop of ``edge_runtime.backends.onnx``; genai's own search (``generate_next_token``) is never used.
A new prompt reuses the KV cache of the prefix it shares with the previous sequence (``rewind_to``). The calls
go through genai's C API (``genai_native``), not its Python binding, which holds the GIL while the model runs.

genai opens a folder holding a ``genai_config.json``. Ours is written when the model is opened, into a private
temporary folder next to links to the bundle's files, and removed by ``close()``: the config is derived only
from the verified manifest (graph names, cache layout) and config.json plus this load's options (threads,
context length), so writing it at export time would bake load options into a signed file and leave every
bundle exported before it without one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.genai_native import GenaiCallError, GenaiLibrary, NativeGenerator, NativeModel
from edge_runtime.backends.options import DecoderOptions
from edge_runtime.bundle import Manifest
from edge_runtime.decoder import reusable_prefix
from edge_runtime.detokenize import WindowDetokenizer
from edge_runtime.errors import (
    BackendUnavailableError,
    GenerationError,
    ModelLoadError,
    UnsupportedBundleError,
)
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer

GENAI_CONFIG_FILE = "genai_config.json"
MODEL_CONFIG_FILE = "config.json"
MODEL_TYPES = {
    name: name for name in ("gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3", "smollm3")
}
"""Our architecture -> genai's decoder-only model type: onnxruntime-genai 0.12 takes each of these names for a
plain decoder graph (it runs our optimum graph as given: masks, soft-caps and sliding windows are inside it)."""
CACHE_LAYOUT = ["batch_size", "num_kv_heads", "sequence_length", "head_dim"]
"""The only KV layout genai's default cache reads (BNSH)."""
CACHE_DTYPES = frozenset({"float32", "float16"})
LAYER_FIELD = "{layer}"
UNREACHABLE_EOS_OFFSET = 1000
"""genai marks a sequence done on its EOS id; ours is set past the vocabulary so that only the engine (which
knows ``ignore_eos`` and stop strings) ends a sequence."""
ORT_LOG_ERRORS_ONLY = 3


def _genai_library() -> GenaiLibrary:
    """The C library of the installed onnxruntime_genai package (imported first: it sets up onnxruntime; the
    library is then already loaded, so opening it again is cheap)."""
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise BackendUnavailableError(
            "the genai ONNX decoder needs onnxruntime-genai, which is not installed: "
            "pip install 'tandem-inference[edge-genai]', or load with onnx_decoder='loop'"
        ) from exc
    try:
        return GenaiLibrary(Path(onnxruntime_genai.__file__).parent)
    except (OSError, AttributeError) as exc:  # a build without the C API we call
        raise BackendUnavailableError(
            f"the installed onnxruntime-genai lacks its C library ({exc}): reinstall it, pip install "
            "'tandem-inference[edge-genai]', or load with onnx_decoder='loop'"
        ) from exc


def _layer_pattern(name: str) -> str:
    """``past_key_values.{layer}.key`` -> genai's printf form ``past_key_values.%d.key``."""
    if name.count(LAYER_FIELD) != 1 or "%" in name:
        raise UnsupportedBundleError(f"genai cannot name the cache tensors {name!r} (needs one {LAYER_FIELD})")
    return name.replace(LAYER_FIELD, "%d")


def genai_config(manifest: Manifest, model_config: Mapping[str, Any], options: DecoderOptions) -> dict[str, Any]:
    """The genai_config.json that maps the bundle's graph for this load, or UnsupportedBundleError saying why
    it does not map (the caller then decodes with the Python loop)."""
    model_type = MODEL_TYPES.get(manifest.architecture)
    if model_type is None:
        raise UnsupportedBundleError(f"genai has no decoder type for a {manifest.architecture!r} model")
    try:
        io = manifest.extra["onnx"]["io"]
        kv = io["kv_cache"]
        vocab = int(io.get("vocab_size") or model_config["vocab_size"])
        inputs = {"input_ids": io["input_ids"]}
        for name in ("attention_mask", "position_ids"):
            if io.get(name):
                inputs[name] = io[name]
        if kv.get("layout", CACHE_LAYOUT) != CACHE_LAYOUT or str(kv["dtype"]) not in CACHE_DTYPES:
            raise UnsupportedBundleError(f"genai cannot read a {kv.get('layout')} {kv['dtype']} KV cache")
        session: dict[str, Any] = {
            "log_id": "tandem", "log_severity_level": ORT_LOG_ERRORS_ONLY, "provider_options": [],
        }
        if options.threads:
            session["intra_op_num_threads"] = options.threads
        decoder = {
            "session_options": session,
            "filename": manifest.model_file,
            "head_size": int(kv["head_dim"]),
            "hidden_size": int(model_config["hidden_size"]),
            "num_attention_heads": int(model_config["num_attention_heads"]),
            "num_hidden_layers": int(kv["num_layers"]),
            "num_key_value_heads": int(kv["num_kv_heads"]),
            "inputs": inputs | {"past_key_names": _layer_pattern(kv["past_key"]),
                                "past_value_names": _layer_pattern(kv["past_value"])},
            "outputs": {"logits": io["logits"], "present_key_names": _layer_pattern(kv["present_key"]),
                        "present_value_names": _layer_pattern(kv["present_value"])},
        }
        bos = model_config.get("bos_token_id")
        pad = model_config.get("pad_token_id")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnsupportedBundleError(f"the manifest or config.json lacks what genai needs ({exc!r})") from exc
    return {
        "model": {
            "type": model_type, "vocab_size": vocab, "context_length": options.context_length,
            "bos_token_id": bos if isinstance(bos, int) else 0, "pad_token_id": pad if isinstance(pad, int) else 0,
            "eos_token_id": vocab + UNREACHABLE_EOS_OFFSET, "decoder": decoder,
        },
        "search": {"do_sample": False, "num_beams": 1, "max_length": options.context_length,
                   "past_present_share_buffer": False},  # share_buffer needs a GroupQueryAttention graph
    }


def read_genai_config(folder: Path, manifest: Manifest, options: DecoderOptions) -> dict[str, Any]:
    """``genai_config`` from the (verified) bundle folder; UnsupportedBundleError when it does not map."""
    if MODEL_CONFIG_FILE not in manifest.files:
        raise UnsupportedBundleError(f"the bundle has no {MODEL_CONFIG_FILE} (genai needs the model's shape)")
    try:
        model_config = json.loads((folder / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedBundleError(f"the bundle's {MODEL_CONFIG_FILE} cannot be read ({exc})") from exc
    return genai_config(manifest, model_config, options)


def _model_folder(folder: Path, manifest: Manifest, config: Mapping[str, Any]) -> Path:
    """A private temporary folder with the config and links to the bundle's files (genai resolves the model
    file, and its external data, relative to the config's folder)."""
    out = Path(tempfile.mkdtemp(prefix="tandem-genai-"))
    try:
        for name in manifest.files:
            link = out / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((folder / name).resolve())
        (out / GENAI_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(out, ignore_errors=True)
        raise UnsupportedBundleError(f"cannot prepare genai's model folder ({exc})") from exc
    return out


class GenaiDecoder:
    """A Decoder over one onnxruntime-genai Generator (batch 1), kept across requests for prefix reuse."""

    def __init__(
        self, folder: Path, manifest: Manifest, options: DecoderOptions, eos_token_ids: frozenset[int]
    ) -> None:
        config = read_genai_config(folder, manifest, options)
        library = _genai_library()
        self._folder = _model_folder(folder, manifest, config)
        try:
            self.model = NativeModel(library, self._folder)
        except GenaiCallError as exc:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise ModelLoadError(f"onnxruntime-genai cannot load {manifest.model_file}: {exc}") from exc
        self._generator: NativeGenerator | None = None
        self._cleanup = weakref.finalize(self, _free, self.__dict__, self._folder)
        self.tokenizer = BundleTokenizer(folder / TOKENIZER_FILE)
        self.vocabulary = self.tokenizer.vocabulary
        self.vocabulary_size = self.tokenizer.vocabulary_size
        self.context_length = options.context_length
        self.eos_token_ids = eos_token_ids
        self._vocab = int(config["model"]["vocab_size"])
        self._tokens: list[int] = []  # what the generator's KV cache holds

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special)

    def detokenizer(self, prompt_ids: Sequence[int]) -> WindowDetokenizer:
        return self.tokenizer.detokenizer(prompt_ids)

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, int]:
        cached = reusable_prefix(self._tokens, token_ids)
        try:
            if self._generator is None:
                self._generator, cached = NativeGenerator(self.model, self.context_length, self._vocab), 0
            elif cached < len(self._tokens):
                self._generator.rewind_to(cached)
        except GenaiCallError as exc:
            self._reset()
            raise GenerationError(f"onnxruntime-genai failed to start a sequence: {exc}") from exc
        del self._tokens[cached:]
        return self._append(token_ids[cached:]), cached

    def decode_one_token(self, token_id: int) -> np.ndarray:
        return self._append((token_id,))

    def _append(self, token_ids: Sequence[int]) -> np.ndarray:
        """Run ``token_ids`` after the cached ones: the (vocab,) float32 logits after the last."""
        generator = self._generator
        assert generator is not None, "prefill starts a sequence"
        try:
            generator.append_tokens(np.asarray(token_ids, dtype=np.int32))
            logits = generator.logits()
        except GenaiCallError as exc:
            self._reset()
            raise GenerationError(f"onnxruntime-genai failed to run the decoder: {exc}") from exc
        self._tokens.extend(token_ids)
        return logits  # (vocab,) float32, valid until the next step

    def _reset(self) -> None:
        """Drop the sequence (its state is unknown after a failed call); the next prefill starts afresh."""
        if self._generator is not None:
            self._generator.close()
        self._generator, self._tokens = None, []

    def close(self) -> None:
        self._cleanup()


def _free(handles: dict[str, Any], folder: Path) -> None:
    """Free a decoder's generator, then its model, then its private folder (close() or garbage collection)."""
    for name in ("_generator", "model"):
        handle = handles.pop(name, None)
        if handle is not None:
            handle.close()
    shutil.rmtree(folder, ignore_errors=True)
