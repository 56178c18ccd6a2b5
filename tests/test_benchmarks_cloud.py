"""`python -m benchmarks.cloud --quick --json` runs end to end (a real replica process on loopback and an
in-process engine) and prints the issue's figures and the paired ones; the paired summary is checked on
known rounds. Figures from real runs are never asserted, only that they are consistent measurements."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cloud import _summary
from tests.support import REPO

RUN_TIMEOUT_S = 300


def _side(tokens: int, seconds: float, ttfts: list[float]) -> dict[str, object]:
    return {"tokens": tokens, "seconds": seconds, "ttfts": ttfts}


def test_summary_pairs_each_round() -> None:
    # the machine got twice as fast after the first round: per side the medians mix fast and slow rounds, the
    # paired ratio compares each round with itself
    runs = [
        {"direct": _side(100, 1.0, [0.010]), "grpc": _side(100, 1.25, [0.012])},
        {"direct": _side(100, 0.5, [0.005]), "grpc": _side(100, 0.625, [0.006])},
        {"direct": _side(100, 0.5, [0.005]), "grpc": _side(100, 0.625, [0.006])},
    ]
    row = _summary(runs)
    assert row["ratio_paired"] == pytest.approx(0.8)
    assert row["ratio_paired_ci"] == pytest.approx([0.8, 0.8])
    assert row["ratio"] == pytest.approx(160 / 200)
    assert row["ttft_overhead_p50_ms_paired"] == pytest.approx(1.0)
    assert row["ttft_p50_ms_grpc"] == pytest.approx(6.0) and row["ttft_p50_ms_direct"] == pytest.approx(5.0)


@pytest.mark.slow
def test_quick_run_prints_every_figure(toy_cache: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cloud", "--quick", "--json", "--streams", "1,4", "--cache", str(toy_cache)],
        capture_output=True, text=True, cwd=REPO, timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert set(results["concurrency"]) == {"1", "4"}
    for row in results["concurrency"].values():
        for key in ("tps_grpc", "tps_direct", "ratio", "ratio_paired", "ttft_p50_ms_grpc", "ttft_p50_ms_direct"):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
        low, high = row["ratio_paired_ci"]
        assert low <= row["ratio_paired"] <= high
        assert row["ttft_p50_ms_grpc"] <= row["ttft_p99_ms_grpc"]
        assert 0 < row["transport_floor_share"] < 1 and 0 < row["ratio_at_floor"] < 1
        assert row["ttft_floor_p50_ms"] > 0
    assert results["goals"]["met"] is False  # without 16 streams the batching goal cannot be judged
