"""A backend team's cloud tier on loopback: a replica and a gateway in front of it, each run from its TOML
file by the `tandem cloud` commands, and a client calling the gateway with an API key.

    python examples/cloud_tier.py [FOLDER]

Shows: the two config files (written to FOLDER: the replica's [[tenants]] entry for the gateway's own key, the
gateway's for the client's key), the replica and the gateway started as `tandem cloud serve -c replica.toml`
and `tandem cloud gateway -c gateway.toml` would start them (JSON-line logs in FOLDER/*.log), a streamed
Generate through the typed client, the refusals (UNAUTHENTICATED) of a wrong key at the gateway and of the
client's key at the replica, and both servers draining on SIGTERM. The replica runs the CPU engine over a toy
model with random weights, so the words are noise; every step is the real one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloud_service.auth import hash_key, new_key
from cloud_service.client import CloudClient
from cloud_service.errors import AuthenticationError
from edge_runtime import GenerationRequest, Message, SamplingParams
from export.toy_models import ToyModelSpec, cached_toy_model

REPLICA = """\
[server]
host = "127.0.0.1"
port = 0                      # any free port (the log's "serving" line says which); 50051 in production
metrics_port = 0              # no Prometheus endpoint in this example

[[models]]
name = "assistant"
path = "{model}"
engine = "cpu"                # "vllm" on a GPU, "llamacpp" for a GGUF bundle
version = "v1"

[[tenants]]                   # the gateway is the replica's only caller; its callers' quotas are the gateway's
name = "gateway"
key_sha256 = "{gateway_key_sha256}"
requests_per_minute = 1000000
tokens_per_minute = 1000000000
"""
GATEWAY = """\
[server]
host = "127.0.0.1"
port = 0
metrics_port = 0

[[tenants]]                   # `tandem cloud new-key acme` prints a key and these lines
name = "acme"
key_sha256 = "{client_key_sha256}"
requests_per_minute = 600
tokens_per_minute = 200000

[gateway]
replicas = ["{replica}"]
replica_api_key_env = "TANDEM_REPLICA_KEY"   # the gateway's own key at the replicas, kept out of the file
"""


def start(work: Path, command: str, config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Run `tandem cloud COMMAND -c CONFIG`, logging to FOLDER/COMMAND.log; its process and address."""
    log = work / f"{command}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "tandem", "cloud", command, "-c", str(config)],
                                   stderr=sink, env={**os.environ, **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("message") == "serving":
                return process, f"127.0.0.1:{entry['port']}"
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"`tandem cloud {command}` did not start:\n{log.read_text()}")


async def call(gateway: str, replica: str, key: str) -> None:
    request = GenerationRequest(messages=[Message("user", "Name three colours.")],
                                sampling=SamplingParams(temperature=0.0, max_tokens=12))
    async with CloudClient(gateway, api_key=key, timeout_s=30) as cloud:
        models = await cloud.list_models()
        print("models:", [f"{m.name}@{m.version} ({m.engine}, {m.max_context} tokens)" for m in models])
        print("answer: ", end="")
        async for event in cloud.generate(request, model="assistant"):  # one TokenEvent per token, as on a device
            print(event.text, end="", flush=True)
            if event.usage is not None:
                print(f"\n  finished: {event.finish_reason}, {event.usage.prompt_tokens} prompt + "
                      f"{event.usage.completion_tokens} completion tokens")
    for who, target, wrong in (("a wrong key at the gateway", gateway, "tdm_not_a_key"),
                               ("the client's key at the replica", replica, key)):
        async with CloudClient(target, api_key=wrong, timeout_s=30) as cloud:
            try:
                async for _ in cloud.generate(request, model="assistant"):
                    pass
            except AuthenticationError as exc:
                print(f"{who}: {exc.code}: {exc}")


def main(work: Path) -> None:
    model = cached_toy_model(ToyModelSpec.tiny("llama"), work / "toys")
    client_key, gateway_key = new_key(), new_key()  # as `tandem cloud new-key acme` / `... new-key gateway`
    (work / "replica.toml").write_text(REPLICA.format(model=model, gateway_key_sha256=hash_key(gateway_key)))
    servers: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        process, replica = start(work, "serve", work / "replica.toml", {})
        servers.append(("replica", process))
        print("replica:", replica)
        (work / "gateway.toml").write_text(GATEWAY.format(client_key_sha256=hash_key(client_key), replica=replica))
        process, gateway = start(work, "gateway", work / "gateway.toml", {"TANDEM_REPLICA_KEY": gateway_key})
        servers.append(("gateway", process))
        print("gateway:", gateway)
        asyncio.run(call(gateway, replica, client_key))
    finally:
        for name, process in reversed(servers):  # SIGTERM: drain (in-flight streams finish), then exit 0
            process.send_signal(signal.SIGTERM)
            print(f"{name} exited {process.wait(timeout=60)} after SIGTERM")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch))
