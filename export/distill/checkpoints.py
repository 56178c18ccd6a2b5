"""Checkpoints of a distillation run: everything needed to continue it bit for bit.

One file per checkpoint, ``step-00000100.pt`` in the checkpoint folder, holding the student's weights, the
optimizer and scheduler states, the step, the RNG states (torch, Python, NumPy), the data position and the
run's fingerprint. Each file is written to a temporary name in the same folder, flushed to disk and renamed
into place, so a run killed mid-write leaves the previous checkpoint intact and never a torn one. Files are
read back with ``torch.load(weights_only=True)``: a checkpoint holds only tensors and plain values.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from pathlib import Path
from typing import Any

from export.errors import ExportError

_NAME = re.compile(r"^step-(\d{8})\.pt$")
KEEP_LAST = 2
"""Older checkpoints are removed once a newer one is safely on disk."""


class CheckpointError(ExportError):
    """A checkpoint cannot be read, or belongs to a different run; the message says how to start over."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``folder``, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def save_checkpoint(folder: str | os.PathLike[str], step: int, state: dict[str, Any], keep: int = KEEP_LAST) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, then drop all but the ``keep`` newest."""
    import torch

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    target = root / checkpoint_name(step)
    temporary = root / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    for _, old in list_checkpoints(root)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({exc}); delete it (or its folder) or run with --no-resume"
        ) from exc
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a distillation checkpoint; delete it or run with --no-resume")
    return state


def clear_checkpoints(folder: str | os.PathLike[str]) -> None:
    """Remove this module's files from ``folder`` (checkpoints and leftover temporaries), then the folder
    itself when nothing else is in it."""
    root = Path(folder)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if _NAME.match(path.name) or (path.name.startswith(".step-") and path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # Something else lives there: leave it.
        root.rmdir()


def rng_state() -> dict[str, Any]:
    """The states of every random generator a run may draw from, as plain values and tensors."""
    import numpy as np
    import torch

    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, [int(key) for key in keys], int(position), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
