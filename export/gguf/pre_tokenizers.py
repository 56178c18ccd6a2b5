"""Which of llama.cpp's pre-tokenizers a byte-level BPE tokenizer uses, read from its split pattern.

llama.cpp's converter recognises a tokenizer by the hash of its tokens for a fixed text, so a public
tokenizer converts but a vocabulary retrained on the same splitter (a domain tokenizer, the toy models) does
not. The split regex in tokenizer.json tells the same thing for any vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

# Split patterns of public tokenizers -> llama.cpp's name for that pre-tokenizer.
PRE_TOKENIZERS = {
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ): "llama-bpe",
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ): "qwen2",
}


def split_patterns(model_dir: Path) -> list[str]:
    """The Split regexes of tokenizer.json's pre-tokenizer, in order (empty when there is none)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return []
    pre = json.loads(path.read_text()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") or [pre]
    return [step.get("pattern", {}).get("Regex") for step in steps if step.get("type") == "Split"]


def pre_tokenizer_of(model_dir: Path) -> str | None:
    """llama.cpp's pre-tokenizer name for the model's tokenizer, or None when its split pattern is unknown."""
    patterns = split_patterns(model_dir)
    return PRE_TOKENIZERS.get(patterns[0]) if patterns else None
