"""What every decoder is opened with, resolved once by ``load_bundle``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderOptions:
    context_length: int
    """Tokens of KV cache (prompt + generated)."""
    threads: int | None
    """CPU threads for the runtime; None: the library's default."""
