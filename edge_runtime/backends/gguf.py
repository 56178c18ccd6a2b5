"""GGUF bundles on llama.cpp (through llama-cpp-python).

llama-cpp-python's ``Llama`` loads the model and context; the decoder then calls ``llama_decode`` itself, one
``llama_batch_get_one`` per chunk (positions and sequence implied by the KV cache) and a reused one-token batch
per decode step. ``Llama.eval`` would rebuild its batch field by field in Python and keep its own token
record for every token, all while holding the GIL; skipping it removes that per-token Python from the decode loop
(BENCHMARKS.md, "Edge runtime"). The last position's logits are read straight
from llama.cpp's buffer, so sampling, logprobs, stop sequences and detokenization are the engine's own and
match the ONNX backend.
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
from edge_runtime.decoder import Detokenizer, reusable_prefix
from edge_runtime.detokenize import PieceDetokenizer
from edge_runtime.errors import BackendUnavailableError, GenerationError, ModelLoadError
from edge_runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer

if TYPE_CHECKING:
    import llama_cpp

ARCHITECTURES = frozenset({"gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3", "smollm3"})
"""Source architectures (Hugging Face ``model_type``) whose GGUF bundles are verified against transformers:
converted by llama.cpp's converter, checked, quantized and decoded (tests/export/gguf/test_architectures.py)."""

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
        self._ctx = self.llm.ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_batch = llama_cpp.llama_n_batch(self._ctx)
        self._ids: list[int] = []
        """The tokens in the KV cache (sequence 0), in order."""
        self._one = (llama_cpp.llama_token * 1)()
        self._one_batch = llama_cpp.llama_batch_get_one(self._one, 1)
        # llama.cpp may round its cache up (to a multiple of 256); the engine keeps to the asked length
        self.context_length = min(options.context_length, self.llm.n_ctx())
        self.n_vocab = self.llm.n_vocab()
        self._logits_address: int | None = None
        self._logits = np.empty(0, dtype=np.float32)
        eos = self.llm.token_eos()
        self.eos_token_ids = eos_token_ids | ({eos} if eos >= 0 else set())
        self.vocabulary = self.tokenizer.vocabulary if self.tokenizer is not None else ""
        self.vocabulary_size = self.n_vocab

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.tokenize(text, add_special=add_special)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenizer(self, prompt_ids: Sequence[int]) -> Detokenizer:
        if self.tokenizer is not None:
            return self.tokenizer.detokenizer(prompt_ids)
        return PieceDetokenizer(lambda token: self.llm.detokenize([token]))

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, int]:
        cached = reusable_prefix(self._ids, token_ids)
        if cached < len(self._ids):
            if not self._llama_cpp.llama_memory_seq_rm(self._memory, 0, cached, -1):
                self._forget()
                cached = 0
            del self._ids[cached:]
        for start in range(cached, len(token_ids), self._n_batch):
            chunk = token_ids[start : start + self._n_batch]
            tokens = (self._llama_cpp.llama_token * len(chunk))(*chunk)
            self._decode(self._llama_cpp.llama_batch_get_one(tokens, len(chunk)), chunk)
        return self._logits_row(), cached

    def decode_one_token(self, token_id: int) -> np.ndarray:
        self._one[0] = token_id
        self._decode(self._one_batch, (token_id,))
        return self._logits_row()

    def _decode(self, batch: Any, token_ids: Sequence[int]) -> None:
        code = self._llama_cpp.llama_decode(self._ctx, batch)
        if code != 0:
            self._forget()
            reason = "no room in the KV cache" if code == 1 else "aborted" if code == 2 else f"error {code}"
            raise GenerationError(f"llama.cpp failed to decode {len(token_ids)} token(s): {reason}")
        self._ids.extend(token_ids)

    def _forget(self) -> None:
        """Empty the KV cache, so that the next prompt starts from nothing."""
        self._llama_cpp.llama_memory_clear(self._memory, True)
        self._ids.clear()

    def _logits_row(self) -> np.ndarray:
        pointer = self._llama_cpp.llama_get_logits_ith(self._ctx, -1)
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if address != self._logits_address:  # the buffer rarely moves: reuse the view over it
            self._logits_address = address
            self._logits = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
            )
        return self._logits  # (vocab,) view of llama.cpp's buffer: valid until the next decode

    def close(self) -> None:
        self.llm.close()
