"""What every decoder is opened with, resolved once by ``load_bundle``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderOptions:
    context_length: int
    """Tokens of KV cache (prompt + generated)."""
    threads: int | None
    """CPU threads for decoding (one token at a time); None: the library's default."""
    batch_threads: int | None = None
    """CPU threads for the prompt (prefill) where the runtime separates them (llama.cpp); None: ``threads``."""
