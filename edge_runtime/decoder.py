"""The Decoder protocol: what a runtime library must do for the local engine, and nothing more.

A decoder holds one loaded model and its KV cache for one sequence. The engine around it (``LocalEngine``)
owns everything else (queueing, sampling, stop sequences, detokenization, events), so llama.cpp and ONNX Runtime
behave identically above this line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


def reusable_prefix(cached_ids: Sequence[int], token_ids: Sequence[int]) -> int:
    """How many leading tokens of a new prompt ``token_ids`` the KV cache of ``cached_ids`` can keep: the
    prefix they share, less the prompt's last token if it is all shared (one token must run, to give logits)."""
    shared = 0
    for cached_id, new_id in zip(cached_ids, token_ids, strict=False):
        if cached_id != new_id:
            break
        shared += 1
    return min(shared, len(token_ids) - 1)


class Detokenizer(Protocol):
    def add(self, token: int) -> str:
        """The text that ``token`` makes visible (may be empty)."""
        ...

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        ...


class Decoder(Protocol):
    context_length: int
    """Tokens the KV cache holds (prompt + generated)."""
    eos_token_ids: frozenset[int]
    """Tokens that end a sequence."""
    vocabulary: str
    """Fingerprint of the vocabulary ``tokenize`` uses ("" when unknown)."""
    vocabulary_size: int
    """Token ids the model takes: 0 .. vocabulary_size - 1."""

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Token ids of ``text``; special-token text is parsed as special tokens; ``add_special`` adds the
        tokenizer's own (BOS) as for a raw prompt."""
        ...

    def detokenizer(self, prompt_ids: Sequence[int]) -> Detokenizer:
        """A fresh incremental detokenizer for the tokens that will follow ``prompt_ids``."""
        ...

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, int]:
        """Run the prompt (reusing the cached prefix it shares with the previous sequence, where the runtime
        can): the (vocab,) float32 logits after its last token, and how many tokens came from the cache."""
        ...

    def decode_one_token(self, token_id: int) -> np.ndarray:
        """Append one token to the sequence: the (vocab,) float32 logits after it."""
        ...

    def close(self) -> None:
        """Free the model and its cache."""
        ...
