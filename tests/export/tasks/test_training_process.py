"""Task-model training runs in a child process with a fixed thread count: the same spec gives bit-identical
weights with the machine idle or busy, progress reaches the parent, and a failing child is a typed error."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from export.tasks.build import TaskBuildProgress, TaskModelsSpec, _data
from export.tasks.training_process import TrainingProcessError, run_training_stage

BUSY_SECONDS = 60
"""Upper bound of the CPU burner's life: it is killed when the training ends, and ends by itself after this."""


class _Recorder(TaskBuildProgress):
    def __init__(self) -> None:
        self.updates: list[tuple[int, int | None]] = []

    def update(self, done: int, total: int | None, detail: str = "") -> None:
        self.updates.append((done, total))


def _teacher_digest(root: Path) -> str:
    return hashlib.sha256((root / "teacher" / "model.safetensors").read_bytes()).hexdigest()


def _train(root: Path, spec: TaskModelsSpec) -> _Recorder:
    teacher_data, _ = _data(spec, root / "data")
    progress = _Recorder()
    run_training_stage("teacher", spec, root, teacher_data, progress)
    return progress


def test_the_same_spec_trains_to_the_same_weights_on_an_idle_and_a_busy_machine(tmp_path: Path) -> None:
    spec = TaskModelsSpec.smoke()
    idle = _train(tmp_path / "idle", spec)
    assert idle.updates[-1] == (spec.teacher_training.steps, spec.teacher_training.steps)
    burner = subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {BUSY_SECONDS}\n"
                               "while time.time() < end: pass"])
    try:
        _train(tmp_path / "busy", spec)
    finally:
        burner.kill()
        burner.wait()
    assert _teacher_digest(tmp_path / "idle") == _teacher_digest(tmp_path / "busy")


def test_a_failing_child_is_a_typed_error_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(TrainingProcessError, match="training the teacher failed"):
        run_training_stage("teacher", TaskModelsSpec.smoke(), tmp_path, tmp_path / "missing.jsonl",
                           TaskBuildProgress())
    with pytest.raises(ValueError, match="stage"):
        run_training_stage("tokenizer", TaskModelsSpec.smoke(), tmp_path, tmp_path, TaskBuildProgress())
