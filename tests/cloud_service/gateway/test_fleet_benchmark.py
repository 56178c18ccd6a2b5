"""`benchmarks/fleet.py --quick --json` runs end to end (in-process fleet, seconds) and reports every figure the
fleet issue asks for: equal replicas on both profiles with their no-queueing floors, one slow replica with
bursty arrivals under four policies, an overload shed at the gateway's admission, the shared-prefix chats;
and writes its plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.fleet import FULL, Bursts, bursty
from tests.support import REPO

POLICY_KEYS = {"ttft_p50_ms", "ttft_p99_ms", "e2e_p99_ms", "throughput_tps", "errors"}


def test_the_quick_fleet_benchmark_prints_every_figure_and_writes_the_plot(tmp_path):
    plot = tmp_path / "plots" / "fleet.png"
    done = subprocess.run([sys.executable, "-m", "benchmarks.fleet", "--quick", "--json", "--plot", str(plot)],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    compute, burst, overload = result["compute_bound"], result["bursty"], result["overload"]
    assert set(result["policies"]) == set(compute["policies"]) == {"round_robin", "p2c"}
    assert set(burst["policies"]) == {"round_robin", "random", "least_loaded", "p2c"}
    for row in [*result["policies"].values(), *compute["policies"].values(), *result["prefix"].values(),
                *burst["policies"].values()]:
        assert set(row) >= POLICY_KEYS and row["errors"] == 0 and row["throughput_tps"] > 0
    for scenario in (result, compute, burst):  # nothing beats running alone on an idle replica
        assert 0 < scenario["floor"]["e2e_p99_ms"] <= min(r["e2e_p99_ms"] for r in scenario["policies"].values())
    assert result["workload"]["capacity"]["binding"] == "kv_cache" and compute["capacity"]["binding"] == "batch"
    for name in ("p2c_vs_rr_p99_ratio", "compute_bound_p2c_vs_rr_p99_ratio", "bursty_p2c_vs_rr_p99_ratio",
                 "bursty_p2c_vs_random_p99_ratio", "bursty_least_loaded_vs_rr_p99_ratio",
                 "bursty_least_loaded_vs_random_p99_ratio", "overload_p99_vs_load_ratio", "prefix_ttft_p50_gain"):
        assert result[name] > 0, name
    # the overload is refused at the gateway's admission, each refusal with its retry-after
    assert overload["offered"] == overload["shed"] + overload["admitted"] and overload["admitted"] > 0
    assert set(overload["shed_reasons"]) <= {"queue full", "queue wait"}
    assert overload["shed_without_retry_after"] == 0
    assert set(result["prefix_ttft_p99_ms"]) == set(result["prefix_cache_hit_ratio"]) == {"p2c", "p2c_affinity"}
    assert set(result["goals"]["met"]) == {"bursty_p2c_vs_rr_p99_ratio", "bursty_p2c_vs_random_p99_ratio",
                                           "overload_sheds_at_admission", "overload_p99_vs_load_ratio",
                                           "overload_admitted_failed", "prefix_ttft_p50_gain"}
    assert plot.read_bytes().startswith(b"\x89PNG") and result["plot"] == str(plot)


def test_bursty_arrivals_keep_the_mean_rate_and_come_in_bursts():
    bursts = Bursts()
    arrivals = bursty(FULL, 20_000, rate=10.0, seed=1, bursts=bursts)
    span = arrivals[-1].at
    assert abs(len(arrivals) / span - 10.0) < 0.5  # the long-run rate is the mean rate
    # two thirds of the arrivals come in bursts, which hold a third of the time
    share = sum(a.burst for a in arrivals) / len(arrivals)
    assert abs(share - bursts.high * bursts.burst_s / (bursts.burst_s + bursts.calm_s)) < 0.05
    # counts per second vary far more than a Poisson process's (index of dispersion 1)
    counts = [0] * (int(span) + 1)
    for arrival in arrivals:
        counts[int(arrival.at)] += 1
    mean = sum(counts) / len(counts)
    assert sum((c - mean) ** 2 for c in counts) / len(counts) / mean > 3
    assert bursty(FULL, 50, 10.0, seed=1, bursts=bursts) == arrivals[:50]  # seeded


def test_bursts_must_keep_the_mean_rate():
    with pytest.raises(ValueError, match="not 1"):
        Bursts(high=3.0)
