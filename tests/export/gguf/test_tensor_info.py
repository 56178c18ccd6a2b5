"""The GGUF tensor table read through ggml's C reader: the same table as gguf-py's reader, and a typed error on a
file ggml cannot parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.errors import ConversionError
from export.gguf.pipeline import MODEL_FILE
from export.gguf.tensor_info import _ggml, _read_with_python, read_tensor_infos


def test_llama_cpp_python_ships_the_ggml_reader() -> None:
    assert _ggml() is not None, "libggml-base was not found beside llama_cpp: read_tensor_infos fell back to gguf-py"


@pytest.mark.parametrize("quantization", ["f32", "q8_0", "q4_k_m"])
def test_ggml_reads_the_table_gguf_py_reads(bundles, quantization: str) -> None:
    model_file = bundles("llama", "gguf", quantization) / MODEL_FILE
    infos = read_tensor_infos(model_file)
    assert infos == _read_with_python(model_file)
    embedding = next(info for info in infos if info.name == "token_embd.weight")
    assert len(embedding.shape) == 2 and embedding.n_elements == embedding.shape[0] * embedding.shape[1]


def test_a_file_ggml_cannot_parse_is_a_conversion_error(bundles, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((bundles("llama", "gguf", "q8_0") / MODEL_FILE).read_bytes()[:2000])
    with pytest.raises(ConversionError, match="is not a readable GGUF file"):
        read_tensor_infos(cut)
