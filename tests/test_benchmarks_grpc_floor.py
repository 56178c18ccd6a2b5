"""The grpc.aio floor: streams are shaped like the replica's (chunk cadence from the servicer's constants), every
token arrives through a real bare server process, and the CPU it reports is a share of the cores."""

from __future__ import annotations

import pytest

from benchmarks.grpc_floor import Pace, measure
from cloud_service.servicer import CHUNK_INTERVAL_S, CHUNK_RATE_BUDGET


def test_a_stream_sends_a_chunk_per_servicer_interval_plus_the_first_and_the_last() -> None:
    assert Pace.of(1, 64, 0.003) == Pace(64, pytest.approx(0.192), 2 + int(0.192 / CHUNK_INTERVAL_S))
    crowded = Pace.of(32, 64, 0.008)
    assert crowded.chunks == 2 + int(crowded.seconds / (32 / CHUNK_RATE_BUDGET))
    assert Pace.of(1, 3, 1.0).chunks == 3  # never more chunks than tokens


def test_measure_streams_every_token_and_reports_a_share_of_the_cores() -> None:
    rows = measure({1: Pace(8, 0.02, 3), 4: Pace(5, 0.01, 2)}, rounds=2)  # raises if a token is missing
    assert set(rows) == {1, 4}
    for row in rows.values():
        assert row["floor_cpu_ms"] > 0 and row["floor_round_ms"] > 0
        assert 0 < row["floor_share"] < 1
        assert 0 < row["floor_ttft_p50_ms"] < row["floor_round_ms"]
