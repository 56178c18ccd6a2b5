"""Hugging Face folder -> GGUF (F32 or F16), by llama.cpp's own converter (see export.gguf.converter)."""

from __future__ import annotations

from pathlib import Path

from export.errors import ConversionError
from export.gguf.architectures import check_gguf_architecture
from export.gguf.converter import ConversionReport, run_converter
from export.source import SourceModel

OUTTYPES = ("f32", "f16")


def convert_to_gguf(source: SourceModel, out_file: Path, outtype: str = "f16") -> ConversionReport:
    """Write ``source`` as one GGUF file at ``out_file`` (``outtype`` "f32" or "f16"; llama.cpp's converter
    keeps norms and other 1-D tensors in F32)."""
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    check_gguf_architecture(source.arch, str(source.path))
    if source.config.get("quantization_config"):
        raise ConversionError(
            f"{source.path} holds pre-quantized weights ({source.config['quantization_config'].get('quant_method')}); "
            "export from the unquantized checkpoint, or wrap an existing GGUF with `tandem export import`"
        )
    report = run_converter(source.path, out_file, outtype)
    if not out_file.is_file():
        raise ConversionError(f"llama.cpp's converter reported success but wrote no {out_file.name}")
    return report
