"""A full build stops when its teacher did not learn a (family, level) cell, and says which and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.errors import TaskBuildError
from export.tasks.answers import accuracy_table
from export.tasks.build import TEACHER_CELL_MIN, TaskModelsSpec, _check_teacher_learned


def _teacher_table(spec: TaskModelsSpec, wrong_family: str | None, wrong_from_level: int) -> dict:
    items = spec.split("test", 4)
    answers = []
    for item in items:
        wrong = item.family == wrong_family and item.level >= wrong_from_level
        answers.append("not it" if wrong else item.answer)
    return accuracy_table(items, answers)


def test_a_teacher_that_missed_a_family_past_a_level_stops_the_full_build(tmp_path: Path) -> None:
    spec = TaskModelsSpec.full()
    _check_teacher_learned(spec, tmp_path, _teacher_table(spec, None, 0))
    with pytest.raises(TaskBuildError, match=r"reverse level 3: 0%; reverse level 4: 0%; reverse level 5: 0%"):
        _check_teacher_learned(spec, tmp_path, _teacher_table(spec, "reverse", 3))
    assert "small" not in TEACHER_CELL_MIN  # the small build's tests measure it instead
    _check_teacher_learned(TaskModelsSpec.small(), tmp_path, _teacher_table(TaskModelsSpec.small(), "reverse", 1))
