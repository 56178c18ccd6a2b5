"""`tandem export onnx`: a signed bundle and a summary on success, one clear line and nothing on disk
on failure."""

from __future__ import annotations

import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from export.onnx.cli import register


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory):
    from export.signing_keys import generate_keypair

    private, _ = generate_keypair(tmp_path_factory.mktemp("keys") / "team")
    return private


def _invoke(*args: str):
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:  # a second command keeps Typer from collapsing the group into `onnx`
        """Placeholder."""

    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args), terminal_width=200)


def test_onnx_command_writes_a_signed_int4_bundle_and_summarises_it(tmp_path, tiny_qwen2, key_file, eval_text) -> None:
    from edge_runtime.bundle import load_public_key, verify_bundle

    out = tmp_path / "qwen2-int4"
    (tmp_path / "eval.txt").write_text(eval_text)
    result = _invoke("onnx", str(tiny_qwen2), str(out), "--quantization", "int4", "--block-size", "16", "--symmetric",
                     "--signing-key", str(key_file), "--eval-data", str(tmp_path / "eval.txt"),
                     "--max-increase-pct", "50")

    assert result.exit_code == 0, result.output
    assert {"model.onnx", "config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    for expected in ("int4 ONNX of qwen2", "model.onnx", "size ratio vs F16", "logits max diff", "fp32 conversion",
                     "int4 artifact", "KV cache", "2 layers x 2 heads x 16, float32", "stored once",
                     "rtn, block 16, zero points none, float16 scales, head 8-bit block 64"):
        assert expected in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    manifest = verify_bundle(out, [load_public_key(key_file.with_suffix(".pub"))])
    assert (manifest.format, manifest.quantization) == ("onnx", "int4")
    assert manifest.evaluation["quality_gate"]["max_increase_pct"] == 50
    assert manifest.extra["onnx"]["quantization"]["block_size"] == 16


def test_onnx_command_passes_the_int4_choices_to_the_bundle(tmp_path, tiny_llama, key_file, eval_text) -> None:
    from edge_runtime.bundle import load_public_key, verify_bundle

    out = tmp_path / "llama-int4"
    (tmp_path / "eval.txt").write_text(eval_text)
    result = _invoke("onnx", str(tiny_llama), str(out), "-q", "int4", "--int4-algorithm", "k_quant", "--head-bits", "4",
                     "--scale-type", "float32", "--accuracy-level", "0", "--signing-key", str(key_file),
                     "--eval-data", str(tmp_path / "eval.txt"), "--max-increase-pct", "50")

    assert result.exit_code == 0, result.output
    manifest = verify_bundle(out, [load_public_key(key_file.with_suffix(".pub"))])
    quantization = manifest.extra["onnx"]["quantization"]
    expected = {"algorithm": "k_quant", "zero_points": "integer", "scale_type": "float32", "head_bits": 4,
                "accuracy_level": 0}
    assert {key: quantization[key] for key in expected} == expected
    assert manifest.tensor_types["lm_head.weight_Q4"].startswith("uint8 (MatMulNBits q4 block 32")


def test_onnx_command_refuses_an_existing_folder_with_a_clear_message(tmp_path, tiny_llama, key_file) -> None:
    result = _invoke("onnx", str(tiny_llama), str(tmp_path), "--signing-key", str(key_file))

    assert result.exit_code == 2
    assert "already exists" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-q", "int4", "--block-size", "7"], "block_size=7 (--block-size) must be a power of two"),
        (["-q", "int4", "--accuracy-level", "9"], "accuracy_level=9 (--accuracy-level)"),
        (["-q", "int8", "--block-size", "32"], "--block-size: INT4 options, they need --quantization int4"),
        (["-q", "int4", "--head-bits", "6"], "head_bits=6 (--head-bits) must be one of 4, 8"),
        (["-q", "int4", "--int4-algorithm", "gptq"], "GPTQ needs calibration text"),
        (["-q", "int4", "--int4-algorithm", "k_quant", "--zero-points", "float"], "whose zero points are integer"),
        (["-q", "int4", "--scale-type", "half"], "scale_type='half' (--scale-type)"),
        (["-q", "fp32", "--head-bits", "8", "--int4-algorithm", "hqq"],
         "--int4-algorithm, --head-bits: INT4 options, they need --quantization int4 (not fp32)"),
    ],
)
def test_onnx_command_rejects_bad_options_before_writing(tmp_path, tiny_llama, args, message, key_file) -> None:
    out = tmp_path / "out"
    result = _invoke("onnx", str(tiny_llama), str(out), *args, "--signing-key", str(key_file))

    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_onnx_command_names_an_unsupported_architecture(tmp_path, tiny_llama, key_file) -> None:
    model = tmp_path / "gpt2"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))

    result = _invoke("onnx", str(model), str(tmp_path / "out"), "--signing-key", str(key_file))

    assert result.exit_code == 2
    assert "architecture 'gpt2'" in result.output and "not supported" in result.output
    assert not (tmp_path / "out").exists()


def test_the_package_and_its_command_import_without_heavy_libraries() -> None:
    import subprocess
    import sys

    from tests.support import REPO

    probe = (
        "import export.onnx, export.onnx.cli, sys\n"
        "heavy = ('torch', 'transformers', 'tokenizers', 'onnx', 'onnxruntime', 'optimum')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.split() == []


def test_cli_help_lists_the_options() -> None:
    result = _invoke("onnx", "--help")

    assert result.exit_code == 0
    for option in ("--quantization", "--block-size", "--symmetric", "--asymmetric", "--accuracy-level", "--overwrite",
                   "--signing-key", "--eval-data", "--max-increase-pct", "--int4-algorithm", "--zero-points",
                   "--scale-type", "--head-bits"):
        assert option in result.output
