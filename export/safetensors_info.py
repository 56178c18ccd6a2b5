"""Facts about a Hugging Face model folder's weights, read from safetensors headers without loading them."""

from __future__ import annotations

import math
import os
from pathlib import Path


def parameter_count(folder: str | os.PathLike[str]) -> int:
    """Number of weights stored in the folder's ``*.safetensors`` files (tied weights count once)."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    total = 0
    for path in files:
        with safe_open(path, framework="numpy") as handle:
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())  # noqa: SIM118
    return total
