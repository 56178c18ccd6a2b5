"""Bad input gets a typed error that names the problem, and a failed export leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.errors import (
    ConversionError,
    NumericalMismatchError,
    OutputExistsError,
    SpecError,
    UnsupportedArchitectureError,
)
from export.onnx import Int4Options, OnnxRunner, export_onnx, write_onnx
from export.source import SourceModel


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_an_unsupported_architecture_is_refused_by_name(tmp_path, tiny_llama) -> None:
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))

    with pytest.raises(UnsupportedArchitectureError, match=r"'gpt2'.*supported: gemma2, .*qwen2"):
        SourceModel.open(folder)


def test_a_family_the_onnx_path_has_not_verified_is_refused_for_onnx_by_name(tmp_path, tiny_llama) -> None:
    """OLMo: optimum-onnx registers an exporter for it, but no toy model of it is verified end to end here
    (tests/export/onnx/test_architectures.py), so write_onnx refuses it before loading anything."""
    folder = tmp_path / "olmo"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "olmo"}))
    source = SourceModel.open(folder, supported=("olmo",))  # as if some other target took it

    supported = "gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3, smollm3"
    with pytest.raises(UnsupportedArchitectureError, match=rf"'olmo'.*for ONNX; supported: {supported}$"):
        write_onnx(source, tmp_path)


def test_an_existing_output_folder_is_refused_before_any_work(tmp_path, tiny_llama) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    with pytest.raises(OutputExistsError, match="already exists"):
        export_onnx(SourceModel.open(tiny_llama), out, "int8")
    assert _leftovers(out) == ["keep.txt"]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"block_size": 7}, "block_size=7 (--block-size)"),
        ({"block_size": 8}, "block_size=8 (--block-size)"),
        ({"block_size": 48}, "block_size=48 (--block-size)"),
        ({"accuracy_level": 5}, "accuracy_level=5 (--accuracy-level)"),
        ({"symmetric": "yes"}, "symmetric='yes'"),
    ],
)
def test_invalid_int4_options_name_the_option(options, named) -> None:
    with pytest.raises(SpecError) as caught:
        Int4Options(**options)
    assert named in str(caught.value)


def test_inconsistent_requests_are_spec_errors(tmp_path, tiny_llama) -> None:
    source = SourceModel.open(tiny_llama)

    with pytest.raises(SpecError, match="'int3' is not supported for ONNX"):
        export_onnx(source, tmp_path / "a", "int3")
    with pytest.raises(SpecError, match="apply to --quantization int4, not fp32"):
        export_onnx(source, tmp_path / "b", "fp32", int4=Int4Options())
    with pytest.raises(SpecError, match="check_atol=-1"):
        export_onnx(source, tmp_path / "c", "fp32", check_atol=-1)
    with pytest.raises(SpecError, match="is not a folder"):
        write_onnx(source, tmp_path / "missing", "fp32")
    assert _leftovers(tmp_path) == []


def test_a_failed_numerical_check_leaves_no_output_folder(tmp_path, tiny_qwen2) -> None:
    out = tmp_path / "artifact"
    steps: list[str] = []

    with pytest.raises(NumericalMismatchError, match=r"fp32 ONNX conversion: logits diverge .* tolerance 0"):
        export_onnx(SourceModel.open(tiny_qwen2), out, "int4", check_atol=0.0, on_step=steps.append)

    assert steps == ["load", "export", "check"]
    assert _leftovers(tmp_path) == []  # neither the folder nor its staging or scratch folders


def test_the_runner_reports_missing_and_corrupt_models(tmp_path) -> None:
    with pytest.raises(ConversionError, match="does not exist"):
        OnnxRunner(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ConversionError, match="ONNX Runtime cannot load model.onnx"):
        OnnxRunner(tmp_path / "model.onnx")


def test_the_runner_refuses_token_ids_outside_the_vocabulary(onnx_artifact) -> None:
    artifact = onnx_artifact("llama", "fp32")
    runner = OnnxRunner(artifact.path)
    vocab = artifact.io["vocab_size"]

    with pytest.raises(SpecError, match=rf"token ids must lie in \[0, {vocab}\)"):
        runner.logits([1, vocab])
    with pytest.raises(SpecError, match="at least one token"):
        runner.logits([])
