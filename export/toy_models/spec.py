"""ToyModelSpec: everything that determines a toy model's bytes, validated where it is built."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from export.errors import SpecError
from export.toy_models.families import FAMILIES

DTYPES = ("float32", "float16", "bfloat16")

# Bump when the factory's output changes for an unchanged spec, so that caches rebuild.
FACTORY_VERSION = 2


@dataclass(frozen=True)
class ToyModelSpec:
    """Shape, tokenizer size, numeric type and seed of a toy model.

    Two builds of the same spec (with the same library versions) are byte-identical.
    """

    arch: str = "llama"
    """Architecture family: a key of `export.toy_models.FAMILIES` ("llama", "qwen2", "gemma3_text"...)."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    """Fewer than num_heads gives grouped-query attention, as in current small models."""
    intermediate_size: int = 128
    vocab_size: int = 512
    """Target size of the learned BPE vocabulary; special tokens come on top. The trained tokenizer may
    stop short of it on a small corpus; config.json always records the real size."""
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    dtype: str = "float32"
    init_std: float = 0.3
    """Standard deviation of the random weights. Far above training-time defaults (0.02) for tiny models:
    their logits then spread (std about 2.5 instead of 0.6), so greedy decoding has clear winners and
    varied output instead of near-ties and one repeated token."""
    corpus_lines: int = 1500
    """Lines of the generated tokenizer-training corpus; larger vocabularies need more."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in FAMILIES:
            raise SpecError(f"arch={self.arch!r} is not supported; choose one of {sorted(FAMILIES)}")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_position_embeddings", "corpus_lines"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.hidden_size % self.num_heads:
            raise SpecError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise SpecError(f"head size {self.hidden_size // self.num_heads} must be even (rotary embedding)")
        if self.num_heads % self.num_kv_heads:
            raise SpecError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if not 256 < self.vocab_size <= 1_000_000:
            raise SpecError(f"vocab_size={self.vocab_size} must exceed the 256 byte tokens (and stay sane)")
        if self.dtype not in DTYPES:
            raise SpecError(f"dtype={self.dtype!r} is not supported; choose one of {DTYPES}")
        if not 0 < self.init_std < 1:
            raise SpecError(f"init_std={self.init_std} must be between 0 and 1")

    @classmethod
    def tiny(cls, arch: str = "llama", seed: int = 0) -> ToyModelSpec:
        """A model that builds in about a second: for tests and the smoke demo."""
        return cls(arch=arch, num_layers=FAMILIES[arch].tiny_layers if arch in FAMILIES else 2, seed=seed)

    @classmethod
    def bench(cls, arch: str = "llama", seed: int = 0) -> ToyModelSpec:
        """About 100M parameters, shaped like a small real model (12 layers, GQA, 16k vocabulary,
        bfloat16 weights): for speed measurements."""
        return cls(
            arch=arch,
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            num_kv_heads=4,
            intermediate_size=2048,
            vocab_size=16384,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            dtype="bfloat16",
            init_std=0.02,
            corpus_lines=60000,
            seed=seed,
        )

    def digest(self) -> str:
        """Stable hash of the spec and the factory version: the cache key."""
        payload = json.dumps({"factory": FACTORY_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def name(self) -> str:
        return f"toy-{self.arch}-h{self.hidden_size}-l{self.num_layers}-s{self.seed}"
