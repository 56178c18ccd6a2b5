"""Run a GGUF file with llama.cpp (through llama-cpp-python) to score it: logits and perplexity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.errors import ConversionError
from export.quality import WindowNll, nll_from_logits

if TYPE_CHECKING:
    from llama_cpp import Llama


class GgufScorer:
    """A llama.cpp context that returns the logits of every position. Close it (or use ``with``)."""

    def __init__(self, model_file: Path, n_ctx: int, *, f32_cache: bool = False, n_threads: int | None = None) -> None:
        """``f32_cache`` keeps the KV cache in F32 instead of llama.cpp's default F16, for the numerical
        check: its rounding would otherwise dominate the differences being measured."""
        import llama_cpp

        cache_type = llama_cpp.GGML_TYPE_F32 if f32_cache else llama_cpp.GGML_TYPE_F16
        try:
            self._llama: Llama = llama_cpp.Llama(
                model_path=str(model_file), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                n_threads=n_threads, type_k=cache_type, type_v=cache_type, verbose=False,
            )
        except ValueError as exc:
            raise ConversionError(f"llama.cpp cannot load {model_file.name}: {exc}") from exc

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """(len, vocab) float32 logits of one sequence, evaluated from an empty cache."""
        return self.logits_view(token_ids).copy()

    def logits_view(self, token_ids: Sequence[int]) -> np.ndarray:
        """``logits`` without the copy: a view of llama.cpp's buffer, valid until the next call (a window's
        logits are hundreds of megabytes on a large vocabulary; the evaluation reads each once)."""
        self._llama.reset()
        self._llama.eval(list(token_ids))
        return np.asarray(self._llama.scores[: len(token_ids)], dtype=np.float32)

    def window_nll(self) -> WindowNll:
        return lambda window: nll_from_logits(self.logits(window), window)

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return self._llama.tokenize(text.encode(), add_bos=add_special, special=True)

    def close(self) -> None:
        self._llama.close()

    def __enter__(self) -> GgufScorer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
