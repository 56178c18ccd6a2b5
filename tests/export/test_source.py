"""SourceModel.open refuses every broken model folder with a message that says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.errors import SourceModelError, UnsupportedArchitectureError
from export.source import SourceModel


@pytest.fixture
def model(tiny_llama: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_llama, tmp_path / "model"))


def test_a_complete_folder_opens(model: Path) -> None:
    source = SourceModel.open(model)
    assert source.arch == "llama"
    assert source.parameter_count() > 0
    assert source.kv_bytes_per_token(2) == 2 * 2 * 2 * 16 * 2  # K and V, 2 layers, 2 KV heads of 16, F16


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match="is not a folder"):
        SourceModel.open(tmp_path / "nowhere")


def test_missing_config(model: Path) -> None:
    (model / "config.json").unlink()
    with pytest.raises(SourceModelError, match="no config.json"):
        SourceModel.open(model)


def test_unsupported_architecture_lists_the_supported_ones(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    supported = "gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3, smollm3"
    with pytest.raises(UnsupportedArchitectureError, match=f"'gpt2' .* supported: {supported}"):
        SourceModel.open(model)


def test_missing_weights(model: Path) -> None:
    (model / "model.safetensors").unlink()
    with pytest.raises(SourceModelError, match="no .safetensors weights"):
        SourceModel.open(model)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights(model: Path, damage: str) -> None:
    path = model / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 64)
    with pytest.raises(SourceModelError, match="not a readable safetensors file"):
        SourceModel.open(model)


def test_missing_tokenizer(model: Path) -> None:
    (model / "tokenizer.json").unlink()
    with pytest.raises(SourceModelError, match="no tokenizer"):
        SourceModel.open(model)
