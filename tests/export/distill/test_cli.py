"""`tandem export distill`, on a local Typer app the command is registered on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from export.distill import REPORT_NAME
from export.distill.cli import register
from tests.support import heavy_modules_after


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def export() -> None:
        """A group, as `tandem export` is (a lone command would become the app itself)."""

    register(app)
    return app


def invoke(app: typer.Typer, *args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["distill", *args], terminal_width=200)


QUICK = ("--steps", "4", "--seq-len", "32", "--batch-size", "8", "--lr", "0.01", "--eval-max-windows", "2",
         "--checkpoint-every", "2")


def test_importing_the_package_and_command_loads_no_ml_library() -> None:
    assert heavy_modules_after("import export.distill, export.distill.cli") == []


def test_distill_command_writes_the_student_and_prints_perplexities(
    app: typer.Typer, tiny_llama: Path, small_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "student"
    result = invoke(app, str(tiny_llama), str(small_corpus), str(out), "--keep-layers", "0", *QUICK,
                    "--temperature", "3", "--alpha-kl", "0.8", "--alpha-ce", "0.2")
    assert result.exit_code == 0, result.output
    for row in ("teacher", "student (initial)", "student (distilled)", "steps"):
        assert row in result.output
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["config"]["student"] == {"keep_layers": [0]}
    settings = report["config"]
    assert (settings["temperature"], settings["alpha_kl"], settings["alpha_ce"]) == (3, 0.8, 0.2)
    assert f"{report['held_out']['student']['perplexity']:.3f}" in result.output
    assert not (tmp_path / "student.checkpoints").exists()


def test_config_student_options(app: typer.Typer, tiny_qwen2: Path, small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "narrow"
    result = invoke(app, str(tiny_qwen2), str(small_corpus), str(out), "--layers", "1", "--hidden-size", "32",
                    "--intermediate-size", "64", "--heads", "2", "--kv-heads", "1", *QUICK, "--no-resume")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (1, 32, 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--keep-layers", "0,x"), "--keep-layers '0,x' must be comma-separated"),
        (("--keep-layers", "0", "--layers", "1"), "cannot be combined with student.num_hidden_layers"),
        (("--keep-layers", "0,7"), "layer 7 does not exist"),
        (("--hidden-size", "60", "--heads", "8"), "student.hidden_size=60 must be divisible"),
        (("--seq-len", "1"), "seq_len=1 must be at least 2"),
        (("--eval-fraction", "1.5"), "eval_fraction=1.5"),
    ],
)
def test_bad_options_exit_2_with_the_field_named(
    app: typer.Typer, tiny_llama: Path, small_corpus: Path, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    result = invoke(app, str(tiny_llama), str(small_corpus), str(tmp_path / "out"), *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_data_and_existing_output_exit_2(
    app: typer.Typer, tiny_llama: Path, small_corpus: Path, tmp_path: Path
) -> None:
    result = invoke(app, str(tiny_llama), str(tmp_path / "none.jsonl"), str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "none.jsonl: no such file" in result.output
    assert not (tmp_path / "out").exists()
    result = invoke(app, str(tiny_llama), str(small_corpus), str(tmp_path))
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_the_command_resumes_an_interrupted_run(
    app: typer.Typer, tiny_llama: Path, small_corpus: Path, tmp_path: Path
) -> None:
    from export.distill import DistillConfig, StudentSpec, distill

    out = tmp_path / "student"
    # The run the command below describes, stopped after its checkpoint at step 2 (as Ctrl-C would).
    config = DistillConfig(teacher=tiny_llama, data=small_corpus, out=out, student=StudentSpec(keep_layers=(0,)),
                           steps=4, seq_len=32, batch_size=8, lr=0.01, eval_max_windows=2, checkpoint_every=2)

    def interrupt(stats) -> None:
        if stats.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(config, on_step=interrupt)
    result = invoke(app, str(tiny_llama), str(small_corpus), str(out), "--keep-layers", "0", *QUICK)
    assert result.exit_code == 0, result.output
    assert "4 (resumed at 2)" in result.output
    assert not (tmp_path / "student.checkpoints").exists()

    # A checkpoint of other settings is refused rather than silently continued; --no-resume starts over.
    with pytest.raises(KeyboardInterrupt):
        distill(replace(config, out=tmp_path / "again"), on_step=interrupt)
    args = (str(tiny_llama), str(small_corpus), str(tmp_path / "again"), "--keep-layers", "0", *QUICK, "--seed", "5")
    result = invoke(app, *args)
    assert result.exit_code == 2
    assert "seed differ" in result.output and "--no-resume" in result.output
    result = invoke(app, *args, "--no-resume")
    assert result.exit_code == 0, result.output
    assert "resumed" not in result.output
