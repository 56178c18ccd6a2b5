"""The model families a GGUF export supports: those llama.cpp's converter handles and the suite verifies end
to end (tests/export/gguf/test_architectures.py: convert, numerical check, quantize, load, greedy decode).

The converter itself knows many more (``export.gguf.converter.supported_hf_architectures``); an architecture
joins this list when a toy model of it passes those tests (add a family to export.toy_models.families).
"""

from __future__ import annotations

from edge_runtime.backends.gguf import ARCHITECTURES
from export.errors import UnsupportedArchitectureError

GGUF_ARCHITECTURES: tuple[str, ...] = tuple(sorted(ARCHITECTURES))
"""Hugging Face ``model_type`` values (the edge runtime loads GGUF bundles of the same ones)."""


def check_gguf_architecture(model_type: str, where: str) -> None:
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} of {where} is not supported for GGUF; supported: "
            f"{', '.join(GGUF_ARCHITECTURES)}"
        )
