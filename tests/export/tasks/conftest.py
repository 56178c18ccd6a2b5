"""The smoke-size task models (teacher, student, signed bundles with routers), built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("task-models")


@pytest.fixture(scope="session")
def smoke_models(task_cache: Path):
    """``ensure_task_models(size="smoke")``: the whole pipeline at a size that builds in seconds."""
    from export.tasks.build import ensure_task_models

    return ensure_task_models(task_cache, size="smoke")
