"""The bundle's own tokenizer (tokenizer.json through the Rust ``tokenizers``), shared by every backend.

Both backends tokenize with the source model's tokenizer, so they see exactly the ids the source model was
trained on: llama.cpp's built-in SentencePiece tokenizer, for one, inserts a space after every special
token (``<s>[INST]`` becomes ``<s> [INST]``), which a Mistral-style model never saw.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_runtime.detokenize import WindowDetokenizer
from edge_runtime.errors import BackendUnavailableError, ModelLoadError

TOKENIZER_FILE = "tokenizer.json"
FINGERPRINT_HEX = 16


def vocabulary_fingerprint(vocabulary: Mapping[str, int]) -> str:
    """A short digest of a token -> id mapping: engines with equal fingerprints give tokens the same ids, so
    one can continue from the other's token ids (``GenerationRequest.prefix_tokens``)."""
    pairs = sorted(vocabulary.items(), key=lambda pair: (pair[1], pair[0]))
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()[:FINGERPRINT_HEX]


class BundleTokenizer:
    def __init__(self, path: Path) -> None:
        try:
            import tokenizers
        except ImportError as exc:
            raise BackendUnavailableError(
                "bundles are tokenized with the tokenizers library, which is not installed: "
                "pip install 'tandem-inference[edge]'"
            ) from exc
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise ModelLoadError(f"the bundle's {path.name} cannot be read: {exc}") from exc

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special).ids

    @functools.cached_property
    def vocabulary(self) -> str:
        """The fingerprint of this tokenizer's vocabulary (``vocabulary_fingerprint``)."""
        return vocabulary_fingerprint(self._tokenizer.get_vocab(with_added_tokens=True))

    @functools.cached_property
    def vocabulary_size(self) -> int:
        """How many token ids the vocabulary has, added tokens included: valid ids are 0 .. size - 1."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, text: str) -> int | None:
        """The id of a token given by its text (a special token's), or None."""
        return self._tokenizer.token_to_id(text)

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)

    def detokenizer(self, prompt_ids: Sequence[int]) -> WindowDetokenizer:
        return WindowDetokenizer(self.decode, prompt_ids)
