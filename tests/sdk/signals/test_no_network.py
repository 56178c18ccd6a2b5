"""Importing sdk.signals, building a monitor and a hub, and refreshing open no socket and import no gRPC;
the first check does connect (the control that shows the counting listener can see a connection)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdk.signals.health_server import wait_until
from tests.support import REPO, ConnectionCounter

SUBPROCESS_TIMEOUT_S = 60

PROBE = """
import json, os, sys, threading

def sockets():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                found.append(fd)
        except OSError:
            pass
    return len(found)

events = []
sys.addaudithook(lambda event, args: events.append(event) if event.startswith("socket.") else None)
before = sockets()
import sdk.signals
from sdk.signals import LinkMonitor, SignalHub

monitor = LinkMonitor(sys.argv[1], interval_s=60.0, timeout_s=0.5)
hub = SignalHub(link=monitor)
hub.refresh_now()
hub.current()
report = {"sockets": sockets() - before, "socket_events": events, "grpc": "grpc" in sys.modules,
          "threads": threading.active_count()}
if sys.argv[2] == "check":
    monitor.probe_now()
hub.close()
print(json.dumps(report))
"""


@pytest.fixture
def listener() -> Iterator[ConnectionCounter]:
    running = ConnectionCounter()
    yield running
    running.close()


def _run(target: str, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, target, mode], capture_output=True, text=True, cwd=REPO,
                          timeout=SUBPROCESS_TIMEOUT_S, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts sockets through /proc")
def test_import_and_build_open_nothing_and_the_first_check_connects(listener: ConnectionCounter) -> None:
    quiet = _run(f"127.0.0.1:{listener.port}", "none")
    assert quiet == {"sockets": 0, "socket_events": [], "grpc": False, "threads": 1}
    assert listener.accepted == 0

    _run(f"127.0.0.1:{listener.port}", "check")
    assert wait_until(lambda: listener.accepted >= 1)
