"""Measuring on a shared machine: the CPU other processes took during a round, and paired medians.

On a 2-core box any CPU another process takes slows whichever side of a comparison it hits, so the benchmarks
meter it per round and measure a disturbed round again; their paired figures (the median of per-round
ratios, with a bootstrap interval) cancel the machine's drift between rounds.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path


class OtherCpu:
    """CPU seconds that other processes (and the hypervisor: steal) took while a block ran, from /proc/stat:
    on a 2-core machine any of it slows whichever side it hits, so such rounds are measured again."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> tuple[float, float]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        return busy / self.tick, time.process_time()

    def __enter__(self) -> OtherCpu:
        self._start = self._sample()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        (busy0, own0), (busy1, own1) = self._start, self._sample()
        self.seconds = max(0.0, (busy1 - busy0) - (own1 - own0))


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (0 once it is gone), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OtherCpuBut(OtherCpu):
    """``OtherCpu``, not counting ``pids`` (a replica the benchmark started) either."""

    def __init__(self, pids: tuple[int, ...]) -> None:
        super().__init__()
        self.pids = pids

    def _sample(self) -> tuple[float, float]:
        busy, own = super()._sample()
        return busy, own + sum(process_cpu_s(pid) for pid in self.pids)


def median_ci(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """Median and a 95 % percentile-bootstrap interval of it."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return statistics.median(values), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
