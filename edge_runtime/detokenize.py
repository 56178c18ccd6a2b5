"""Incremental detokenizers: the text each new token makes visible, never repeating or losing a character.

- ``PieceDetokenizer`` concatenates each token's bytes (llama.cpp's token pieces) through an incremental UTF-8
  decoder, so a character split across tokens appears once it is complete.
- ``WindowDetokenizer`` works with any ``decode(ids) -> str`` (Hugging Face tokenizers, whose decoders may
  strip a leading space or merge pieces): it decodes a short window ending at the new token, starting a few
  tokens back in the prompt, and releases the difference once it does not end in an incomplete character.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

_INCOMPLETE = "\ufffd"
PROMPT_CONTEXT_TOKENS = 5
"""Prompt tokens decoded before the first new token, so that word-boundary rules see their left context;
the window reaches further back (up to MAX_PROMPT_CONTEXT_TOKENS) while it decodes to nothing (special
tokens), since a SentencePiece decoder strips the leading space of whatever text comes first."""
MAX_PROMPT_CONTEXT_TOKENS = 64


class PieceDetokenizer:
    def __init__(self, piece: Callable[[int], bytes]) -> None:
        self._piece = piece
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        return self._utf8.decode(self._piece(token))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class WindowDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: Sequence[int]) -> None:
        self._decode = decode
        start = max(len(prompt_ids) - PROMPT_CONTEXT_TOKENS, 0)
        floor = max(len(prompt_ids) - MAX_PROMPT_CONTEXT_TOKENS, 0)
        while start > floor and not decode(list(prompt_ids[start:])):
            start = max(start - PROMPT_CONTEXT_TOKENS, floor)
        self._ids = list(prompt_ids[start:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def add(self, token: int) -> str:
        self._ids.append(token)
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) <= len(prefix_text) or (text.endswith(_INCOMPLETE) and not final):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return text[len(prefix_text) :]
