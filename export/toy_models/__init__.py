"""Toy-model factory: deterministic, offline, tiny Hugging Face model folders.

No model hub is reachable where Tandem is developed and tested, so tests, benchmarks and the demo build
their own models: a random-initialised Llama or Qwen2 with a byte-level BPE tokenizer trained locally,
special tokens and a chat template, in about a second (``ToyModelSpec.tiny``) or at about 100M parameters
for speed measurements (``ToyModelSpec.bench``).

    from export.toy_models import ToyModelSpec, cached_toy_model
    folder = cached_toy_model(ToyModelSpec.tiny("qwen2"), cache_root)
"""

from export.toy_models.build import BUILD_STEPS, build_toy_model, cached_toy_model
from export.toy_models.families import FAMILIES, Family
from export.toy_models.spec import ToyModelSpec

__all__ = ["BUILD_STEPS", "FAMILIES", "Family", "ToyModelSpec", "build_toy_model", "cached_toy_model"]
