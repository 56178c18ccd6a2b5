"""What an ONNX export can be asked for, validated before any heavy work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from export.errors import SpecError

Quantization = Literal["fp32", "int8", "int4"]
QUANTIZATIONS: tuple[str, ...] = ("fp32", "int8", "int4")

ACCURACY_LEVELS = (0, 1, 2, 3, 4)
"""MatMulNBits ``accuracy_level``: 0 unset (A stays in its own type), 1 fp32, 2 fp16, 3 bf16, 4 int8."""

LOGITS_ATOL = 1e-3
"""Numerical check of the FP32 conversion: max |logit difference| to the transformers model."""

INT8_PER_CHANNEL = True
"""Dynamic INT8 with one scale per output channel of each MatMul weight. Measured on the tiny toy Llama
(held-out windows vs transformers): logits RMS error 12.2 % of the logits' std per channel vs 13.3 % per
tensor, top-1 agreement 81.4 % vs 80.5 %, for 2.6 % more bytes (the per-channel scales)."""

INT8_REDUCE_RANGE = True
"""INT8 weights in the reduced range [-64, 64]. ONNX Runtime's MatMulInteger takes uint8 activations times int8
weights; on x86 CPUs without VNNI (AVX2 only) its kernel adds pairs of those products in int16 and saturates
with full 8-bit weights, so one bundle decoded differently by CPU. Measured on the tiny toy models (24 greedy
tokens, agreement with the source's choice teacher-forced on the bundle's path): 8-bit weights 0.958 / 0.708
(llama / qwen2) with AVX-512 VNNI but 0.458 / 0.083 on a Haswell-class CPU (qemu-x86_64 -cpu Haswell); 7-bit
weights 0.875 / 0.833 on both, with the same tokens. ONNX Runtime's quantization docs recommend reduce_range on
non-VNNI machines; a bundle has to behave the same on every device, and the export's quality gate has to measure
what devices run."""


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise SpecError(
            f"quantization {quantization!r} is not supported for ONNX (--quantization); choose one of "
            f"{', '.join(QUANTIZATIONS)}"
        )


@dataclass(frozen=True)
class Int4Options:
    """Block-wise weight-only INT4 (ONNX Runtime ``MatMulNBits`` / ``GatherBlockQuantized``).

    The default block of 32 weights is the block size of llama.cpp's Q4_0: with asymmetric blocks and
    float32 scales it stores 4 + (32 + 4) / 32 = 5.125 bits per weight, 0.32x of F16, inside the 0.36x budget
    (BENCHMARKS.md, "Export", has the measured sizes). Small models' hidden sizes (64, 576, 896) are
    multiples of 32 but not always of 128, and only whole blocks let a tied embedding share the LM head's
    blocks. Block 128 stores 4.28 bits per weight with a larger error (tiny toy Llama:
    logits RMS error 71 % vs 64 % of the logits' spread at 32).
    """

    block_size: int = 32
    """Weights per quantization block along the input dimension: a power of two >= 16."""
    symmetric: bool = False
    """Symmetric blocks (no zero points, 1/64 smaller at block 32) or asymmetric (zero points; lower
    error: on the tiny toy models the embedding error is 0.07 vs 0.11)."""
    accuracy_level: int | None = None
    """MatMulNBits compute precision of the activations (see ACCURACY_LEVELS); None leaves it unset."""
    quantize_embeddings: bool = True
    """Also quantize the token-embedding Gather to GatherBlockQuantized. Small models carry large
    embedding tables: left in float32 they alone would be a quarter of an F16 copy of the weights."""

    def __post_init__(self) -> None:
        size = self.block_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size & (size - 1):
            raise SpecError(
                f"block_size={size!r} (--block-size) must be a power of two of at least 16, e.g. 32 or 128"
            )
        if not isinstance(self.symmetric, bool):
            raise SpecError(f"symmetric={self.symmetric!r} (--symmetric/--asymmetric) must be true or false")
        level = self.accuracy_level
        if level is not None and (isinstance(level, bool) or level not in ACCURACY_LEVELS):
            raise SpecError(
                f"accuracy_level={level!r} (--accuracy-level) must be one of "
                f"{', '.join(map(str, ACCURACY_LEVELS))} (0: unset, 1: fp32, 2: fp16, 3: bf16, 4: int8) or unset"
            )
        if not isinstance(self.quantize_embeddings, bool):
            raise SpecError(f"quantize_embeddings={self.quantize_embeddings!r} must be true or false")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
