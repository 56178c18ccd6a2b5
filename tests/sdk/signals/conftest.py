"""Fixtures of the signals tests: a real health server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sdk.signals.health_server import HealthServer


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server = HealthServer().start()
    yield server
    server.stop()
