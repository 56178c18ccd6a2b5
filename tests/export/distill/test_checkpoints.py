"""Checkpoint files: atomic, pruned, read back exactly, refused when corrupt."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from export.distill.checkpoints import (
    CheckpointError,
    clear_checkpoints,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

torch = pytest.importorskip("torch")


def test_saves_are_atomic_pruned_and_read_back(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    for step in (3, 6, 9):
        save_checkpoint(folder, step, {"step": step, "w": torch.full((2,), float(step))})
    assert [step for step, _ in list_checkpoints(folder)] == [6, 9]
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000006.pt", "step-00000009.pt"]  # no temporaries
    state = load_checkpoint(latest_checkpoint(folder))
    assert state["step"] == 9 and torch.equal(state["w"], torch.full((2,), 9.0))


def test_a_torn_or_foreign_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.zeros(1000)})
    path = latest_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="--no-resume"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "step-00000002.pt")
    with pytest.raises(CheckpointError, match="not a distillation checkpoint"):
        load_checkpoint(tmp_path / "step-00000002.pt")


def test_clear_removes_only_checkpoints(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, 1, {"step": 1})
    clear_checkpoints(folder)
    assert not folder.exists()
    save_checkpoint(folder, 1, {"step": 1})
    (folder / "notes.txt").write_text("mine")
    clear_checkpoints(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    clear_checkpoints(tmp_path / "never-made")


def test_rng_states_round_trip_through_a_file(tmp_path: Path) -> None:
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    save_checkpoint(tmp_path, 1, {"step": 1, "rng": rng_state()})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    set_rng_state(load_checkpoint(latest_checkpoint(tmp_path))["rng"])
    actual = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(actual[0], expected[0]) and actual[1:] == expected[1:]
