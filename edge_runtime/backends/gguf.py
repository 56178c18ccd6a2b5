"""GGUF bundles on llama.cpp (through llama-cpp-python).

The decoder drives ``Llama.eval`` and reads the last position's logits straight from llama.cpp's buffer,
so sampling, logprobs, stop sequences and detokenization are the engine's own and match the ONNX backend.
Text is tokenized with the bundle's tokenizer.json like the source model (see ``edge_runtime.tokenizer``);
llama.cpp's own tokenizer is the fallback for a GGUF bundle without one.
A new prompt reuses the KV cache of the prefix it shares with the previous sequence (multi-turn chats).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.backends.options import DecoderOptions
from edge_runtime.decoder import Detokenizer
from edge_runtime.detokenize import PieceDetokenizer
from edge_runtime.errors import BackendUnavailableError, GenerationError, ModelLoadError
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer

if TYPE_CHECKING:
    import llama_cpp

ARCHITECTURES = frozenset({"llama", "mistral", "qwen2"})
"""Source architectures whose GGUF bundles are verified against transformers (tests/edge_runtime)."""

MAX_BATCH = 512


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            "GGUF bundles run on llama.cpp, which is not installed: pip install 'tandem-inference[edge]'"
        ) from exc
    return llama_cpp


class LlamaCppDecoder:
    def __init__(self, model_file: Path, options: DecoderOptions, eos_token_ids: frozenset[int]) -> None:
        llama_cpp = _import_llama_cpp()
        tokenizer_file = model_file.parent / TOKENIZER_FILE
        self.tokenizer = BundleTokenizer(tokenizer_file) if tokenizer_file.is_file() else None
        try:
            self.llm: llama_cpp.Llama = llama_cpp.Llama(
                model_path=str(model_file),
                n_ctx=options.context_length,
                n_batch=min(MAX_BATCH, options.context_length),
                n_threads=options.threads,
                n_threads_batch=options.batch_threads or options.threads,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp cannot load {model_file.name}: {exc}") from exc
        self._llama_cpp = llama_cpp
        # llama.cpp may round its cache up (to a multiple of 256); the engine keeps to the asked length
        self.context_length = min(options.context_length, self.llm.n_ctx())
        self.n_vocab = self.llm.n_vocab()
        self._logits_address: int | None = None
        self._logits = np.empty(0, dtype=np.float32)
        eos = self.llm.token_eos()
        self.eos_token_ids = eos_token_ids | ({eos} if eos >= 0 else set())
        self.vocabulary = self.tokenizer.vocabulary if self.tokenizer is not None else ""

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.tokenize(text, add_special=add_special)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenizer(self, prompt_ids: Sequence[int]) -> Detokenizer:
        if self.tokenizer is not None:
            return self.tokenizer.detokenizer(prompt_ids)
        return PieceDetokenizer(lambda token: self.llm.detokenize([token]))

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, int]:
        llm = self.llm
        cached = 0
        for cached_id, new_id in zip(llm.input_ids[: llm.n_tokens], token_ids, strict=False):
            if cached_id != new_id:
                break
            cached += 1
        cached = min(cached, len(token_ids) - 1)  # at least one token runs, to produce logits
        llm.n_tokens = cached  # eval() drops the cache beyond n_tokens before it runs the rest
        return self._eval(token_ids[cached:]), cached

    def decode_one_token(self, token_id: int) -> np.ndarray:
        return self._eval([token_id])

    def _eval(self, token_ids: Sequence[int]) -> np.ndarray:
        try:
            self.llm.eval(token_ids)
        except (RuntimeError, ValueError) as exc:
            self.llm.reset()
            raise GenerationError(f"llama.cpp failed to decode: {exc}") from exc
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if address != self._logits_address:  # the buffer rarely moves: reuse the view over it
            self._logits_address = address
            self._logits = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
            )
        return self._logits  # (vocab,) view of llama.cpp's buffer: valid until the next decode

    def close(self) -> None:
        self.llm.close()
