"""Quantize a GGUF file in-process with llama.cpp's own quantizer, and report what it actually stored.

llama.cpp picks a type per tensor: the output projection usually gets a better type than the rest, and a
tensor whose rows do not fit the type's block (K-quants need rows that are multiples of 256) falls back to
another type. The actual types are read back from the written file; those outside the quantization's
nominal mix are reported as substitutions.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from export.errors import ConversionError, SpecError
from export.gguf.tensor_info import read_tensor_infos

# quantization -> (llama.cpp file type, tensor types its nominal mix uses)
QUANTIZATIONS: dict[str, tuple[str, frozenset[str]]] = {
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", frozenset({"Q8_0"})),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", frozenset({"Q4_0", "Q6_K"})),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", frozenset({"Q4_K", "Q6_K"})),
}

NOMINAL_BITS = {"f32": 32.0, "f16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "q4_k_m": 4.9}
"""Bits per weight of each type's nominal mix (block scales included): the disk-space estimate of a file."""


@dataclass(frozen=True)
class TensorTypes:
    types: dict[str, str]
    """GGUF tensor name -> stored type name ("Q4_K", "F32"...)."""
    substituted: dict[str, str]
    """Weight matrices stored outside the quantization's nominal mix, with their actual type."""
    bits_per_weight: float
    weight_bytes: int
    row_widths: dict[str, int] = field(default_factory=dict)
    """Substituted tensor -> its row length (llama.cpp's ne[0]), which decides the type it could take."""
    substituted_share: float = 0.0
    """Fraction of all weights held by the substituted tensors."""

    def substitution_summary(self, quantization: str) -> str | None:
        """One readable sentence on the substituted tensors (None when there are none): counts per stored
        type, why llama.cpp chose them, and how much of the model they hold."""
        if not self.substituted:
            return None
        counts = Counter(self.substituted.values())
        per_type = ", ".join(f"{n} x {t}" for t, n in sorted(counts.items(), key=lambda item: -item[1]))
        widths = sorted(set(self.row_widths.values()))
        misfit = [w for w in widths if w % K_QUANT_BLOCK]
        reason = (
            f"their rows ({', '.join(map(str, misfit))} wide) are not a multiple of {K_QUANT_BLOCK}, the block of "
            "llama.cpp's K-quants, so it fell back to a type whose block fits"
            if misfit else "llama.cpp's per-tensor rules for this architecture chose them"
        )
        return (
            f"{len(self.substituted)} tensors are stored outside the {quantization} mix ({per_type}): {reason}. "
            f"They hold {100 * self.substituted_share:.0f} % of the weights; the file averages "
            f"{self.bits_per_weight:.2f} bits per weight."
        )


K_QUANT_BLOCK = 256


def read_tensor_types(model_file: Path, quantization: str | None = None) -> TensorTypes:
    """The types ``model_file`` stores, with the weight matrices outside ``quantization``'s nominal mix."""
    types, substituted, widths = {}, {}, {}
    nominal = QUANTIZATIONS[quantization][1] if quantization in QUANTIZATIONS else None
    n_weights = n_bytes = n_substituted = 0
    for tensor in read_tensor_infos(model_file):
        types[tensor.name] = tensor.type_name
        n_weights += tensor.n_elements
        n_bytes += tensor.n_bytes
        if nominal is not None and sum(d > 1 for d in tensor.shape) > 1 and tensor.type_name not in nominal:
            substituted[tensor.name] = tensor.type_name
            widths[tensor.name] = tensor.shape[0]  # GGUF lists ne[0], the row length, first
            n_substituted += tensor.n_elements
    return TensorTypes(
        types, substituted, bits_per_weight=8 * n_bytes / n_weights, weight_bytes=n_bytes, row_widths=widths,
        substituted_share=n_substituted / n_weights,
    )


@contextmanager
def _native_stderr() -> Iterator[io.StringIO]:
    """Capture what native code writes to file descriptor 2 (llama.cpp logs every tensor it quantizes; the
    substitutions it warns about are reported from the written file instead). Process-wide while active."""
    captured = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.write(sink.read().decode(errors="replace"))


def quantize_gguf(source_file: Path, out_file: Path, quantization: str, n_threads: int = 0) -> TensorTypes:
    """Quantize ``source_file`` (F32/F16 GGUF) into ``out_file``; return the stored tensor types."""
    if quantization not in QUANTIZATIONS:
        raise SpecError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)} for GGUF")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZATIONS[quantization][0])
    params.nthread = n_threads
    with _native_stderr() as log:
        status = llama_cpp.llama_model_quantize(str(source_file).encode(), str(out_file).encode(), params)
    if status != 0 or not out_file.is_file():
        tail = "\n".join(log.getvalue().strip().splitlines()[-5:])
        raise ConversionError(
            f"llama.cpp failed to quantize {source_file.name} to {quantization} (status {status}):\n{tail}"
        )
    return read_tensor_types(out_file, quantization)
