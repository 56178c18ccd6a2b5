"""The model families the GGUF converter handles, one declarative entry each.

llama.cpp runs Llama and Mistral as its "llama" architecture, with rotary embeddings on interleaved pairs;
Hugging Face stores their q/k projections with the pairs split into halves, so those two are permuted back.
Qwen2 runs with NEOX-style rotary embeddings (halves), as stored: no permutation; it has q/k/v biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf


@dataclass(frozen=True)
class GgufArchitecture:
    model_type: str
    """The Hugging Face ``model_type``."""
    gguf_arch: gguf.MODEL_ARCH
    unpermute_qk: bool
    """Whether q/k projection rows go back from HF's half-split rotary layout to interleaved pairs."""

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]


ARCHITECTURES: dict[str, GgufArchitecture] = {
    "llama": GgufArchitecture("llama", gguf.MODEL_ARCH.LLAMA, unpermute_qk=True),
    "mistral": GgufArchitecture("mistral", gguf.MODEL_ARCH.LLAMA, unpermute_qk=True),
    "qwen2": GgufArchitecture("qwen2", gguf.MODEL_ARCH.QWEN2, unpermute_qk=False),
}
