"""Promises the project makes about itself: the README's commands, CI, and who installs what."""

from __future__ import annotations

import re
import tomllib

from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=~!\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    [test_command] = re.findall(r"^\s*(make test)\s*$", readme, re.MULTILINE)
    ci_commands = [
        line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_commands == [test_command]
    assert re.search(r"^\s*make demo\s*$", readme, re.MULTILINE)


def test_edge_extra_brings_no_ml_framework() -> None:
    assert not _names(EXTRAS["edge"]) & {"torch", "transformers", "vllm", "optimum-onnx"}


def test_dev_extra_is_everything_but_gpu() -> None:
    assert "tandem-inference[edge,edge-genai,cloud,export]" in EXTRAS["dev"]
    assert "vllm" in _names(EXTRAS["gpu"])
    assert "vllm" not in _names(EXTRAS["dev"])
