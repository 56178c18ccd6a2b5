"""examples/export_recipe.toml builds as its header says: the documented commands, run exactly as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle import load_public_key, verify_bundle
from tests.support import REPO

RECIPE = REPO / "examples" / "export_recipe.toml"
PROMPT = "#   $ "


def documented_commands() -> list[str]:
    """The shell commands of the recipe's header comment (its `#   $ ...` lines), in order."""
    return [line[len(PROMPT):] for line in RECIPE.read_text().splitlines() if line.startswith(PROMPT)]


def test_the_header_documents_the_whole_pipeline() -> None:
    commands = documented_commands()
    assert any(c.startswith("tandem export toy-model") for c in commands)
    assert any("tandem export build $WORK/export_recipe.toml" in c for c in commands)
    assert sum(c.startswith("tandem export verify") for c in commands) == 2


@pytest.mark.slow
def test_the_documented_commands_build_verified_bundles(tmp_path: Path) -> None:
    script = "\n".join(["set -euo pipefail", *documented_commands()])
    # `tandem` as the README's commands name it: the entry point beside this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "WORK": str(tmp_path), "PATH": path, "COLUMNS": "200"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    dist = tmp_path / "dist"
    keys = [load_public_key(tmp_path / "keys" / "team.pub")]
    report = json.loads((dist / "build_report.json").read_text())
    assert set(report["bundles"]) == {"assistant-gguf-q4_k_m", "assistant-onnx-int4"}
    assert report["distill"]["steps"] == 30
    student = json.loads((dist / "student" / "config.json").read_text())
    assert student["num_hidden_layers"] == 1
    for name, quantization in (("assistant-gguf-q4_k_m", "q4_k_m"), ("assistant-onnx-int4", "int4")):
        manifest = verify_bundle(dist / name, keys)
        assert manifest.quantization == quantization
        assert manifest.evaluation["quality_gate"]["max_increase_pct"] == 10.0
    assert "tokens/s" in done.stderr, done.stderr  # `tandem edge generate` ran the bundle (its figures on stderr)
