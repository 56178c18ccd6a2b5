"""`benchmarks/fleet.py --quick --json` runs end to end (in-process fleet, seconds) and reports every figure the
fleet issue asks for, on both replica profiles with their no-queueing floors, and writes its plot."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

POLICY_KEYS = {"ttft_p50_ms", "ttft_p99_ms", "e2e_p99_ms", "throughput_tps", "errors"}


def test_the_quick_fleet_benchmark_prints_every_figure_and_writes_the_plot(tmp_path):
    plot = tmp_path / "plots" / "fleet.png"
    done = subprocess.run([sys.executable, "-m", "benchmarks.fleet", "--quick", "--json", "--plot", str(plot)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["policies"]) == {"round_robin", "least_loaded", "p2c", "p2c_affinity"}
    compute = result["compute_bound"]
    assert set(compute["policies"]) == set(result["policies"])
    for row in [*result["policies"].values(), *compute["policies"].values(), *result["prefix"].values(),
                *result["slow_replica"].values()]:
        assert set(row) >= POLICY_KEYS and row["errors"] == 0 and row["throughput_tps"] > 0
    assert result["p2c_vs_rr_p99_ratio"] > 0 and result["prefix_ttft_p50_gain"] > 0
    assert compute["p2c_vs_rr_p99_ratio"] == result["compute_bound_p2c_vs_rr_p99_ratio"] > 0
    for scenario in (result, compute):  # nothing beats running alone on an idle replica
        assert 0 < scenario["floor"]["e2e_p99_ms"] <= min(r["e2e_p99_ms"] for r in scenario["policies"].values())
    assert result["workload"]["capacity"]["binding"] == "kv_cache" and compute["capacity"]["binding"] == "batch"
    assert set(result["prefix_ttft_p99_ms"]) == {"p2c", "p2c_affinity"}
    assert plot.read_bytes().startswith(b"\x89PNG") and result["plot"] == str(plot)
