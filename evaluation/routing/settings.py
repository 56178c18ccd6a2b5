"""The evaluation's settings: one object, validated where it is built (EvaluationSettingsError names the option).

    settings = EvalSettings(size="full", backend="gguf")     # per_cell None: the size's own test_per_cell
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluation.routing.errors import EvaluationSettingsError

BACKENDS = ("gguf", "onnx")
"""Device bundle formats the task models are exported to (``TaskModels.bundles``)."""
DEFAULT_BACKEND = "gguf"
DEFAULT_CONCURRENCY = 8
"""Requests of one policy run in flight at once: the cloud replicas batch them; the device engine runs one at
a time and queues the rest (its queue holds 32, so it never refuses one)."""
MAX_CONCURRENCY = 32
MAX_PER_CELL = 10_000


def _sizes() -> tuple[str, ...]:
    from export.tasks.build import SIZES

    return SIZES


def _positive_int(option: str, value: object, high: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EvaluationSettingsError(option, f"must be an integer from {low} to {high}, got {value!r}")


@dataclass(frozen=True)
class EvalSettings:
    size: str = "full"
    """Task models to evaluate (``export.tasks.build.SIZES``)."""
    cache_dir: Path | None = None
    """Where the task models are cached; None: ``export.tasks.build.default_cache_dir()``."""
    per_cell: int | None = None
    """Test items per (family, level); None: the size's ``test_per_cell`` (what its build report measured)."""
    backend: str = DEFAULT_BACKEND
    """The device bundle's format."""
    seed: int = 0
    """Seed of the test items and of the random policy's draws."""
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        sizes = _sizes()
        if self.size not in sizes:
            raise EvaluationSettingsError("--size", f"{self.size!r} is not one of {', '.join(sizes)}")
        if self.backend not in BACKENDS:
            raise EvaluationSettingsError("--backend", f"{self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.per_cell is not None:
            _positive_int("--per-cell", self.per_cell, MAX_PER_CELL)
        _positive_int("--seed", self.seed, 2**31 - 1, allow_zero=True)
        _positive_int("concurrency", self.concurrency, MAX_CONCURRENCY)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
            if self.cache_dir.exists() and not self.cache_dir.is_dir():
                raise EvaluationSettingsError("--cache-dir", f"{str(self.cache_dir)!r} is not a folder")

    def resolved_cache_dir(self) -> Path:
        from export.tasks.build import default_cache_dir

        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def resolved_per_cell(self) -> int:
        from export.tasks.build import TaskModelsSpec

        return self.per_cell if self.per_cell is not None else TaskModelsSpec.for_size(self.size).test_per_cell
