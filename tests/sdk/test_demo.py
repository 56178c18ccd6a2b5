from pathlib import Path

from tests.support import invoke


def test_demo_runs_end_to_end_and_reuses_its_model(tmp_path: Path) -> None:
    args = ["demo", "--cache-dir", str(tmp_path), "--max-new-tokens", "8"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "<|start_header_id|>assistant<|end_header_id|>" in first.output
    assert "8 tokens in" in first.output
    [folder] = (tmp_path / "toy-models").iterdir()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    second = invoke(*args)
    assert second.exit_code == 0, second.output
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
