"""DistillConfig / StudentSpec validation: every bad field is a SpecError that names it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from export.distill import DistillConfig, StudentSpec
from export.errors import SpecError


def _config(tmp_path: Path, **fields) -> DistillConfig:
    return DistillConfig(teacher=tmp_path / "teacher", data=tmp_path / "data.txt", out=tmp_path / "out", **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seq_len": 1}, "seq_len=1 must be at least 2"),
        ({"seq_len": 0}, "seq_len=0 must be a positive integer"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"steps": 10, "epochs": 2}, "set only one"),
        ({"steps": -1}, "steps=-1"),
        ({"lr": 0.0}, "lr=0.0 must be a positive number"),
        ({"lr_schedule": "linear"}, "lr_schedule='linear'"),
        ({"steps": 5, "warmup_steps": 5}, "warmup_steps=5 must be smaller than steps=5"),
        ({"temperature": 0}, "temperature=0"),
        ({"alpha_kl": -0.1}, "alpha_kl=-0.1"),
        ({"alpha_kl": 0, "alpha_ce": 0}, "both 0"),
        ({"eval_fraction": 0}, "eval_fraction=0"),
        ({"eval_fraction": 1.0}, "eval_fraction=1.0"),
        ({"seed": -3}, "seed=-3"),
        ({"checkpoint_every": -1}, "checkpoint_every=-1"),
        ({"text_mode": "paragraphs"}, "text_mode='paragraphs'"),
        ({"grad_clip": 0}, "grad_clip=0"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        _config(tmp_path, **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden_size": 60, "num_attention_heads": 8}, "student.hidden_size=60 must be divisible by"),
        ({"hidden_size": 48, "num_attention_heads": 16}, "head size 3"),
        ({"num_attention_heads": 4, "num_key_value_heads": 3}, "multiple of student.num_key_value_heads=3"),
        ({"keep_layers": ()}, "keep_layers is empty"),
        ({"keep_layers": (2, 0)}, "increasing order"),
        ({"keep_layers": (0, 0)}, "distinct"),
        ({"keep_layers": (-1,)}, "-1 is not a layer index"),
        ({"keep_layers": (0,), "hidden_size": 32}, "cannot be combined with student.hidden_size"),
        ({"num_hidden_layers": 0}, "student.num_hidden_layers=0"),
    ],
)
def test_inconsistent_students_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        StudentSpec(**fields)


def test_the_output_must_not_be_the_teacher(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="teacher's folder"):
        DistillConfig(teacher=tmp_path / "m", data=tmp_path / "d.txt", out=tmp_path / "m")


def test_defaults_paths_and_json(tmp_path: Path) -> None:
    config = _config(tmp_path, student=StudentSpec(keep_layers=[0, 2]))
    assert config.student.keep_layers == (0, 2)
    assert config.checkpoint_folder == tmp_path / "out.checkpoints"
    assert replace(config, checkpoint_dir=str(tmp_path / "ck")).checkpoint_folder == tmp_path / "ck"
    data = json.loads(json.dumps(config.as_dict()))
    assert data["student"] == {"keep_layers": [0, 2]}
    assert data["out"] == str(tmp_path / "out")
    # The fingerprint a checkpoint is checked against leaves out where things go.
    assert "out" not in config.training_fingerprint()
    assert config.training_fingerprint() == replace(config, out=tmp_path / "elsewhere").training_fingerprint()
    assert config.training_fingerprint() != replace(config, lr=2e-3).training_fingerprint()


def test_steps_or_epochs_set_the_run_length(tmp_path: Path) -> None:
    assert _config(tmp_path, steps=7).total_steps(100) == 7
    assert _config(tmp_path, batch_size=8).total_steps(100) == 13  # one epoch by default
    assert _config(tmp_path, batch_size=8, epochs=3).total_steps(100) == 38


def test_student_descriptions() -> None:
    assert StudentSpec(keep_layers=(0, 2)).describe() == "teacher layers 0, 2"
    assert StudentSpec(hidden_size=32).overrides == {"hidden_size": 32}
    assert StudentSpec().describe() == "teacher shape, random init"
