"""`python -m benchmarks.sdk --quick --json` runs end to end (tiny model, a real replica process, a real
kill mid-stream) and prints every figure the SDK issue asks for. Figures are never asserted: only their
presence and that they are measurements (finite, positive, consistent)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

FIGURES = ("decision_p50_us", "decision_p99_us", "failover_ms", "overhead_ratio_edge", "overhead_ratio_cloud")
GOALS = ("decision_p99", "failover", "overhead_ratio_edge", "overhead_ratio_cloud")
RUN_TIMEOUT_S = 180


@pytest.mark.slow
def test_quick_run_prints_every_figure(toy_cache: Path, tiny_llama: Path) -> None:
    # toy_cache already holds the tiny Llama (tiny_llama): the benchmark reuses it and builds only its bundle.
    done = subprocess.run([sys.executable, "-m", "benchmarks.sdk", "--quick", "--json", "--cache", str(toy_cache)],
                          capture_output=True, text=True, cwd=REPO, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)

    for key in FIGURES:
        value = results[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert results["decision_p50_us"] <= results["decision_p99_us"]
    assert results["decision"]["calls"] == sum(results["decision"]["targets"].values())
    assert set(results["decision"]["targets"]) == {"device", "cloud"}  # the request mix routes both ways
    assert results["decision"]["cloud_link"] == "up"

    [failover] = results["failover"]["rounds"]
    assert failover["after_tokens"] >= results["failover"]["after_chunks"] - 1  # the kill came mid-stream
    assert failover["from_kill_ms"] >= failover["failover_ms"] > 0

    for side in ("edge", "cloud"):
        assert results[side]["rounds"] == 1 and results[side]["tokens_min"] > 0
    assert results["edge"]["sync"]["ratio"] > 0
    assert results["model"]["quick"] is True

    goals = results["goals"]
    assert set(goals["met"]) == set(GOALS) and all(isinstance(v, bool) for v in goals["met"].values())
    assert goals["all_met"] == all(goals["met"].values())
