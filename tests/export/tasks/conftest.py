"""The smoke- and small-size task models (teacher, student, signed bundles with routers), from the session-wide
``task_models`` fixture (tests/conftest.py): each built at most once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_models(task_models):
    """The whole pipeline at a size that builds in seconds."""
    return task_models("smoke")


@pytest.fixture(scope="session")
def small_models(task_models):
    """Models with a real difficulty signal (about a minute to build)."""
    return task_models("small")
