"""The bundle's own tokenizer (tokenizer.json through the Rust ``tokenizers``), shared by every backend.

Both backends tokenize with the source model's tokenizer, so they see exactly the ids the source model was
trained on: llama.cpp's built-in SentencePiece tokenizer, for one, inserts a space after every special
token (``<s>[INST]`` becomes ``<s> [INST]``), which a Mistral-style model never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_runtime.detokenize import WindowDetokenizer
from edge_runtime.errors import BackendUnavailableError, ModelLoadError

TOKENIZER_FILE = "tokenizer.json"


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

    def token_id(self, text: str) -> int | None:
        """The id of a token given by its text (a special token's), or None."""
        return self._tokenizer.token_to_id(text)

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)

    def detokenizer(self, prompt_ids: Sequence[int]) -> WindowDetokenizer:
        return WindowDetokenizer(self.decode, prompt_ids)
