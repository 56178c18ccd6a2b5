"""A deterministic, offline text corpus to train toy tokenizers on.

Mixed like the text a small assistant model sees: prose, chat turns, arithmetic, code, JSON and some
non-ASCII words, so that the learned merges cover each kind. Pseudo-words from a seeded generator make the
corpus as large as a big vocabulary needs without shipping data files.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

_PROSE = (
    "The device answers short questions on its own and asks the cloud for the hard ones.",
    "When the battery runs low or memory is tight, the request moves to the cloud.",
    "If the network drops in the middle of an answer, the device continues from the partial text.",
    "A bundle holds the model file, the tokenizer, the chat template and a signed manifest.",
    "Quantized weights make the model four times smaller and a little less accurate.",
    "Every file is hashed and the manifest is signed before anything is loaded.",
    "The gateway sends each request to the replica with the least load.",
    "Requests that share a prompt prefix go to the replica that has it cached.",
    "Please summarise the following paragraph in one sentence.",
    "What is the capital of France? The capital of France is Paris.",
    "Translate to German: good morning, how are you today?",
    "Write a haiku about rain on a tin roof at night.",
)
_NON_ASCII = ("café", "naïve", "über", "façade", "señor", "Zürich", "日本語", "中文", "привет", "😀", "→", "±", "µs")
_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "n", "r", "s", "t", "l", "nd", "ck", "ng")
_CODE = (
    "def {w}(x, y):\n    return x * {a} + y\n",
    "for i in range({a}):\n    total += values[i]\n",
    "if {w} is None:\n    raise ValueError('{w} is required')\n",
    'print(f"{w} = {{{w}}}")\n',
)


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.randint(1, 3)))


def _line(rng: random.Random) -> str:
    kind = rng.randrange(8)
    a, b = rng.randint(0, 9999), rng.randint(0, 9999)
    if kind == 0:
        return rng.choice(_PROSE)
    if kind == 1:
        return f"user: {rng.choice(_PROSE)}\nassistant: {' '.join(_word(rng) for _ in range(rng.randint(3, 12)))}."
    if kind == 2:
        return f"{a} + {b} = {a + b}; {a} * {b % 100} = {a * (b % 100)}"
    if kind == 3:
        return rng.choice(_CODE).format(w=_word(rng), a=a)
    if kind == 4:
        return f'{{"id": {a}, "name": "{_word(rng)}", "tags": ["{_word(rng)}", "{_word(rng)}"], "ok": true}}'
    if kind == 5:
        return " ".join(rng.choice(_NON_ASCII) if rng.random() < 0.3 else _word(rng) for _ in range(8))
    words = [_word(rng) for _ in range(rng.randint(5, 16))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice((".", "?", "!", ","))


def corpus_lines(count: int, seed: int) -> Iterator[str]:
    """Yield ``count`` lines of mixed text; the same arguments always give the same lines."""
    rng = random.Random(seed)
    for _ in range(count):
        yield _line(rng)
