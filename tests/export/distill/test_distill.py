"""Whole distillation runs on real tiny models: learning, resume, determinism, output, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from export.distill import (
    REPORT_NAME,
    CheckpointError,
    DataError,
    DistillConfig,
    DistillResult,
    StepStats,
    StudentSpec,
    distill,
)
from export.distill.checkpoints import list_checkpoints
from export.distill.run import PHASES
from export.errors import OutputExistsError, SpecError
from export.source import SourceModel

NARROW = StudentSpec(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                     num_key_value_heads=1)

# How close to the teacher a student must get on the held-out text: within 1.5x its perplexity, i.e. at
# most ln 1.5 = 0.41 nats per token worse. The students have half the teacher's layers (keep-layer) or a
# quarter of its weights (narrow) and train for 150 steps; measured they land at 0.95x and 1.3x.
MAX_PPL_RATIO_TO_TEACHER = 1.5
# "Clearly below its initial value": at least 30 % lower perplexity than before training.
MAX_PPL_RATIO_TO_INIT = 0.7


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _quick(teacher: Path, data: Path, out: Path, **fields) -> DistillConfig:
    """A run of a few seconds: short sequences, few steps, few held-out windows."""
    settings = {"student": StudentSpec(keep_layers=(1,)), "seq_len": 32, "batch_size": 8, "steps": 6, "lr": 1e-2,
                "warmup_steps": 1, "eval_max_windows": 2, "checkpoint_every": 3, **fields}
    return DistillConfig(teacher=teacher, data=data, out=out, **settings)


# -- learning ---------------------------------------------------------------------------------------------


def test_the_teacher_fixture_has_learned_the_corpus(trained_teacher: DistillResult) -> None:
    # Random init scores about the vocabulary size (517); after 150 steps of plain CE training ~17.
    assert trained_teacher.student_initial_perplexity.value > 400
    assert trained_teacher.student_perplexity.value < trained_teacher.student_initial_perplexity.value / 10
    assert trained_teacher.report["held_out"]["student"]["perplexity"] == trained_teacher.student_perplexity.value


@pytest.mark.parametrize("student", [StudentSpec(keep_layers=(0,)), NARROW], ids=["keep-layer-0", "narrow"])
def test_a_smaller_student_learns_to_come_close_to_the_teacher(
    trained_teacher: DistillResult, corpus: Path, tmp_path: Path, student: StudentSpec
) -> None:
    seen: list[StepStats] = []
    config = DistillConfig(
        teacher=trained_teacher.out, data=corpus, out=tmp_path / "student", student=student, steps=150, lr=1e-2,
        warmup_steps=10, seq_len=64, batch_size=16, temperature=2.0, alpha_kl=0.5, alpha_ce=0.5,
        checkpoint_every=0,
    )
    result = distill(config, on_step=seen.append)
    teacher, initial, final = (result.teacher_perplexity.value, result.student_initial_perplexity.value,
                               result.student_perplexity.value)
    print(f"\n{student.describe()}: teacher {teacher:.2f}, student initial {initial:.2f}, final {final:.2f}")
    assert teacher == pytest.approx(trained_teacher.student_perplexity.value, rel=1e-9)  # same held-out windows
    assert final < MAX_PPL_RATIO_TO_INIT * initial
    assert final < MAX_PPL_RATIO_TO_TEACHER * teacher
    # Progress: every step reported, losses finite, the KL term shrinking.
    assert [s.step for s in seen] == list(range(1, 151))
    assert all(math.isfinite(s.loss) and s.tokens_per_s > 0 for s in seen)
    assert sum(s.kl for s in seen[-10:]) < sum(s.kl for s in seen[:10])
    assert seen[0].loss == pytest.approx(0.5 * seen[0].kl + 0.5 * seen[0].ce, rel=1e-5)


# -- resume and determinism ---------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_resuming_after_an_interruption_gives_the_weights_of_an_uninterrupted_run(
    tiny_llama: Path, small_corpus: Path, tmp_path: Path
) -> None:
    straight = distill(_quick(tiny_llama, small_corpus, tmp_path / "straight"))
    assert straight.report["epochs"] > 1  # the batches cross an epoch boundary
    assert not (tmp_path / "straight.checkpoints").exists()  # removed once the output is there

    config = _quick(tiny_llama, small_corpus, tmp_path / "resumed")

    def stop_after_three(stats: StepStats) -> None:
        if stats.step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        distill(config, on_step=stop_after_three)
    assert not config.out.exists()
    assert [step for step, _ in list_checkpoints(config.checkpoint_folder)] == [3]

    steps_after_resume: list[int] = []
    resumed = distill(config, on_step=lambda stats: steps_after_resume.append(stats.step))
    assert resumed.resumed_from_step == 3
    assert steps_after_resume == [4, 5, 6]
    expected, actual = _weights(straight.out), _weights(resumed.out)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert (expected[name] - actual[name]).abs().max().item() <= 1e-6, name
    assert resumed.student_perplexity.value == pytest.approx(straight.student_perplexity.value, rel=1e-6)
    assert resumed.student_initial_perplexity == straight.student_initial_perplexity
    assert not config.checkpoint_folder.exists()


def test_a_checkpoint_of_other_settings_is_not_resumed(tiny_llama: Path, small_corpus: Path, tmp_path: Path) -> None:
    config = _quick(tiny_llama, small_corpus, tmp_path / "s", steps=4, checkpoint_every=2)
    with pytest.raises(Interrupted):
        distill(config, on_step=lambda stats: (_ for _ in ()).throw(Interrupted) if stats.step == 2 else None)
    with pytest.raises(CheckpointError, match=r"lr differ.*--no-resume"):
        distill(replace(config, lr=5e-3))
    assert not config.out.exists()
    # --no-resume starts over and clears the old checkpoints.
    result = distill(replace(config, lr=5e-3), resume=False)
    assert result.resumed_from_step is None and result.steps == 4


def test_the_same_seed_gives_the_same_student(tiny_qwen2: Path, small_corpus: Path, tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict:
        config = _quick(tiny_qwen2, small_corpus, tmp_path / name, student=NARROW, steps=4, seed=seed,
                        checkpoint_every=0)
        return _weights(distill(config).out)

    first, second, other = run("a", 1), run("b", 1), run("c", 2)
    assert all((first[k] == second[k]).all() for k in first)
    assert any(not (first[k] == other[k]).all() for k in first)


# -- the output folder ----------------------------------------------------------------------------------


def test_the_output_is_a_model_folder_with_the_teachers_tokenizer_and_a_report(
    tiny_llama: Path, small_corpus: Path, tmp_path: Path
) -> None:
    import torch

    from export.quality import eval_windows, hf_window_nll, perplexity

    config = _quick(tiny_llama, small_corpus, tmp_path / "student", steps=2, checkpoint_every=0)
    phases: list[str] = []
    result = distill(config, on_phase=phases.append)
    assert tuple(phases) == PHASES
    folder = SourceModel.open(result.out)
    assert folder.arch == "llama" and folder.config["num_hidden_layers"] == 1
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        assert (result.out / name).read_bytes() == (tiny_llama / name).read_bytes(), name
    report = json.loads((result.out / REPORT_NAME).read_text())
    assert report["steps"] == 2
    assert report["config"]["student"] == {"keep_layers": [1]}
    assert report["held_out"]["teacher"]["perplexity"] == result.teacher_perplexity.value
    assert report["held_out"]["student_initial"]["perplexity"] == result.student_initial_perplexity.value
    assert report["held_out"]["student"]["perplexity"] == result.student_perplexity.value
    assert report["seconds"] > 0 and report["data"]["train_sequences"] > 0
    # Reloaded from disk, the student scores what the run reported.
    model = folder.load_model(torch.float32)
    from export.distill.data import pack, read_documents, tokenize_documents

    packed = pack(tokenize_documents(folder.load_tokenizer(), read_documents(small_corpus)), 32, 0.1)
    windows = eval_windows(packed.held_out_tokens, 32, 2)
    assert perplexity(windows, hf_window_nll(model)).value == pytest.approx(result.student_perplexity.value, rel=1e-5)


def test_jsonl_data_and_a_mistral_teacher_work_end_to_end(
    mistral_teacher: Path, small_corpus: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": line}) + "\n" for line in small_corpus.read_text().splitlines()))
    result = distill(_quick(mistral_teacher, data, tmp_path / "s", steps=2, checkpoint_every=0))
    assert result.report["teacher"]["arch"] == "mistral"
    assert SourceModel.open(result.out).config["num_hidden_layers"] == 1
    assert result.report["data"]["train_sequences"] > 0


# -- bad input -----------------------------------------------------------------------------------------


def _left_nothing(config: DistillConfig) -> None:
    assert not config.out.exists()
    assert not config.checkpoint_folder.exists()
    assert not [p for p in config.out.parent.iterdir() if p.name.startswith(f".{config.out.name}.")]


def test_a_missing_data_file_is_named(tiny_llama: Path, tmp_path: Path) -> None:
    config = _quick(tiny_llama, tmp_path / "missing.txt", tmp_path / "out")
    with pytest.raises(DataError, match=r"missing\.txt: no such file"):
        distill(config)
    _left_nothing(config)


def test_a_malformed_jsonl_line_fails_the_run_naming_the_line(tiny_llama: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "fine"}\n\n{"text": broken}\n')
    config = _quick(tiny_llama, data, tmp_path / "out")
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        distill(config)
    _left_nothing(config)


@pytest.mark.parametrize(
    ("student", "message"),
    [(StudentSpec(keep_layers=(0, 5)), "layer 5 does not exist"),
     (StudentSpec(num_attention_heads=3), "must be divisible by student.num_attention_heads=3")],
)
def test_students_that_do_not_fit_the_teacher_are_refused(
    tiny_llama: Path, small_corpus: Path, tmp_path: Path, student: StudentSpec, message: str
) -> None:
    config = _quick(tiny_llama, small_corpus, tmp_path / "out", student=student)
    with pytest.raises(SpecError, match=message):
        distill(config)
    _left_nothing(config)


def test_sequences_longer_than_the_teacher_or_the_data_are_refused(
    tiny_llama: Path, small_corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match="exceeds the teacher's context length 512"):
        distill(_quick(tiny_llama, small_corpus, tmp_path / "a", seq_len=1024))
    short = tmp_path / "short.txt"
    short.write_text("Only a few words of text.\nAnd a second line.\n")
    with pytest.raises(DataError, match="too few"):
        distill(_quick(tiny_llama, short, tmp_path / "b"))
    with pytest.raises(SpecError, match="seq_len=1 must be at least 2"):
        _quick(tiny_llama, small_corpus, tmp_path / "c", seq_len=1)


def test_an_existing_output_is_kept_unless_overwrite(tiny_llama: Path, small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = _quick(tiny_llama, small_corpus, out, steps=2, checkpoint_every=0)
    with pytest.raises(OutputExistsError, match="already exists"):
        distill(config)
    assert (out / "keep.txt").read_text() == "mine"
    distill(replace(config, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / REPORT_NAME).is_file()
