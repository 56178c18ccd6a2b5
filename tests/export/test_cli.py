from pathlib import Path

from tests.support import invoke


def test_toy_model_command_builds_a_folder_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    result = invoke("export", "toy-model", str(out), "--arch", "qwen2")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    assert "parameters" in result.output
    assert "qwen2" in result.output


def test_toy_model_command_refuses_an_existing_folder_with_a_clear_message(tmp_path: Path) -> None:
    result = invoke("export", "toy-model", str(tmp_path))
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert "Traceback" not in result.output


def test_toy_model_command_rejects_an_unknown_architecture(tmp_path: Path) -> None:
    result = invoke("export", "toy-model", str(tmp_path / "x"), "--arch", "gpt2")
    assert result.exit_code == 2
    assert "arch='gpt2' is not supported" in result.output
    assert not (tmp_path / "x").exists()
