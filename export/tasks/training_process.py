"""The task models' training stages in a child process with a fixed thread count, so that a spec trains to the
same weights whatever the machine's load.

The parent used to pick one or two threads by the load of the moment. Two threads now always, with idle OpenMP
threads sleeping instead of spinning (``OMP_WAIT_POLICY``, read when OpenMP starts, hence the child process):
spinning is what made two threads up to 10x slower than one on a busy machine.

The CPU model still changes the rounding: the small spec's teacher after 10 steps hashed differently natively
(AMD Zen 4), under qemu-x86_64 as a Haswell and as an EPYC Rome, even with torch's kernels pinned to AVX2
(``ATEN_CPU_CAPABILITY``) and MKL's to its AVX2 or compatible path (``MKL_CBWR``). So the suite's bounds on
trained models are measured over seeds and over torch's AVX2 and AVX-512 kernels (see
tests/export/tasks/test_small.py), and full builds check that their teacher learned what it should.

The child reports every step to the parent as one line on stdout: PROGRESS_PREFIX and a JSON object.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.errors import TaskBuildError

if TYPE_CHECKING:
    from export.tasks.build import TaskBuildProgress, TaskModelsSpec

TRAINING_THREADS = 2
"""Torch threads of every training run, on any machine (results do not depend on the load, only speed does)."""
PINNED_ENV = {
    "OMP_NUM_THREADS": str(TRAINING_THREADS),
    "MKL_NUM_THREADS": str(TRAINING_THREADS),
    "OMP_WAIT_POLICY": "PASSIVE",
}
STAGES = ("teacher", "student")
ERROR_TAIL_LINES = 20
PROGRESS_PREFIX = "tandem-progress "


class TrainingProcessError(TaskBuildError):
    """The training child failed; the message carries the end of what it wrote to stderr."""


def run_training_stage(
    stage: str, spec: TaskModelsSpec, root: Path, data: Path, progress: TaskBuildProgress
) -> None:
    """Run ``stage`` ("teacher" or "student") of ``spec`` under ``root`` in a child process, forwarding
    its progress; raise TrainingProcessError when it fails."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    env = {**os.environ, **PINNED_ENV}
    command = [sys.executable, "-m", "export.tasks.training_process", stage, str(root), str(data)]
    # stderr to a file: a child's warnings must never fill a pipe nobody reads while we read its progress.
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(pickle.dumps(spec).hex())
        child.stdin.close()
        for line in child.stdout:
            if line.startswith(PROGRESS_PREFIX):  # anything else a library prints is not ours to parse
                event = json.loads(line[len(PROGRESS_PREFIX):])
                progress.update(event["done"], event["total"], event["detail"])
        child.wait()
        errors.seek(0)
        text = errors.read()
    if child.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-ERROR_TAIL_LINES:])
        raise TrainingProcessError(f"training the {stage} failed (exit {child.returncode}):\n{tail}")


class _LineProgress:
    """The child's side of TaskBuildProgress: one JSON line per update."""

    def stage(self, name: str) -> None:
        pass

    def update(self, done: int, total: int | None, detail: str = "") -> None:
        print(PROGRESS_PREFIX + json.dumps({"done": done, "total": total, "detail": detail}), flush=True)


def _child(stage: str, root: Path, data: Path) -> None:
    import torch

    from export.tasks import build

    spec: Any = pickle.loads(bytes.fromhex(sys.stdin.read()))
    torch.set_num_threads(TRAINING_THREADS)
    torch.use_deterministic_algorithms(True)
    train = build.train_teacher if stage == "teacher" else build.train_student
    train(spec, root, data, _LineProgress())


if __name__ == "__main__":
    _child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
