"""`tandem cloud gateway` as a process: flags override the file, SIGHUP re-reads the weights, SIGTERM drains
(readiness NOT_SERVING, new calls refused, the running stream finishes) and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import urllib.request

import pytest

from cloud_service.auth import hash_key
from cloud_service.client import CloudClient
from cloud_service.errors import CloudDrainingError
from cloud_service.gateway.membership import INFERENCE_SERVICE
from cloud_service.server import ReplicaServer
from edge_runtime import collect
from tests.cloud_service.gateway.support import ACME_KEY, GATEWAY_KEY, MODEL, chat, replica_config
from tests.support import REPO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(metrics_port: int, weight: int) -> str:
    return (
        f'[server]\nport = 0\nmetrics_port = {metrics_port}\ndrain_timeout_s = 20\n'
        f'[[tenants]]\nname = "acme"\nkey_sha256 = "{hash_key(ACME_KEY)}"\n'
        '[gateway]\nreplicas = ["127.0.0.1:1"]\npolicy = "round_robin"\nhealth_interval_s = 0.1\n'
        f'load_refresh_s = 0.05\nreplica_api_key = "{GATEWAY_KEY}"\n'
        f'[[gateway.versions]]\nmodel = "{MODEL}"\nversion = "v1"\nweight = {weight}\n'
    )


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_the_gateway_command_reloads_on_sighup_and_drains_on_sigterm(tmp_path):
    metrics_port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(metrics_port, 100))

    async def main():
        replica = ReplicaServer(replica_config())
        await replica.start()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tandem", "cloud", "gateway", "-c", str(config), "--replica",
            f"127.0.0.1:{replica.port}", "--policy", "p2c", cwd=REPO, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert process.stderr is not None
        try:
            started = None
            while started is None:
                line = await asyncio.wait_for(process.stderr.readline(), 30)
                assert line, "the gateway exited before serving"
                if b'"message": "serving"' in line:
                    started = json.loads(line)
            log_task = asyncio.get_running_loop().create_task(_drain(process.stderr))

            config.write_text(_config(metrics_port, 7))
            process.send_signal(signal.SIGHUP)
            weight_line = f'tandem_gateway_version_weight{{model="{MODEL}",version="v1"}} 7.0'
            reloaded = False
            for _ in range(300):
                if weight_line in await asyncio.to_thread(_metrics, metrics_port):
                    reloaded = True
                    break
                await asyncio.sleep(0.02)

            async with CloudClient(f"127.0.0.1:{started['port']}", api_key=ACME_KEY) as cloud:
                events, refused, ready = [], None, True
                async for event in cloud.generate(chat(0, tokens=150), model=MODEL):
                    events.append(event)
                    if len(events) == 1:
                        process.send_signal(signal.SIGTERM)  # drain starts while this stream runs
                        for _ in range(200):
                            ready = await cloud.health(INFERENCE_SERVICE)
                            if not ready:
                                break
                            await asyncio.sleep(0.01)
                        with pytest.raises(CloudDrainingError) as caught:
                            await collect(cloud.generate(chat(1), model=MODEL))
                        refused = caught.value
            code = await asyncio.wait_for(process.wait(), 30)
            log_task.cancel()
            return started, f"127.0.0.1:{replica.port}", reloaded, events, ready, refused, code
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await replica.stop(0.1)

    started, replica, reloaded, events, ready, refused, code = asyncio.run(main())
    assert started["policy"] == "p2c" and started["replicas"] == [replica]  # the flags won over the file
    assert started["available"] == 1
    assert reloaded
    assert events[-1].usage.completion_tokens == 150  # the in-flight stream finished
    assert not ready and refused is not None
    assert code == 0


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
