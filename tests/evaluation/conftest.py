"""Routing-evaluation fixtures: the smoke-size task models (teacher, student, signed bundles with routers) in a
session cache, and one real `tandem eval routing --json` run on them, shared by the tests that read it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import invoke

EVAL_PER_CELL = {"smoke": 1, "small": 15}
"""Test items per (family, level) of the end-to-end runs by size: smoke, 15 items (every family and level once);
small, 90 (2 families x 3 levels x 15: enough for the policies' ordering to show); others DEFAULT_PER_CELL."""
DEFAULT_PER_CELL = 4


def _not_json(constant: str) -> Any:
    raise AssertionError(f"the report holds {constant}, which strict JSON has not")


@pytest.fixture(scope="session")
def eval_cache(task_cache: Path) -> Path:
    """Where the session's task models live (`tandem eval routing --cache-dir`)."""
    return task_cache / "tasks"


@pytest.fixture(scope="session")
def eval_models(task_models) -> Callable[[str], Any]:
    """``eval_models(size)``: the session's task models of that size (tests/conftest.py ``task_models``)."""
    return task_models


@pytest.fixture(scope="session")
def eval_report(eval_cache: Path, eval_models, tmp_path_factory) -> Callable[[str], tuple[dict[str, Any], Path]]:
    """``eval_report(size)``: the JSON object of a real `tandem eval routing --json` run on that size's models
    (run once per size and session), and the plot's path."""
    done: dict[str, tuple[dict[str, Any], Path]] = {}

    def get(size: str) -> tuple[dict[str, Any], Path]:
        if size not in done:
            eval_models(size)
            plot = tmp_path_factory.mktemp("eval-plot") / "routing.png"
            per_cell = EVAL_PER_CELL.get(size, DEFAULT_PER_CELL)
            result = invoke("eval", "routing", "--size", size, "--cache-dir", str(eval_cache), "--per-cell",
                            str(per_cell), "--plot", str(plot), "--json")
            assert result.exit_code == 0, result.output
            done[size] = (json.loads(result.stdout, parse_constant=_not_json), plot)
        return done[size]

    return get
