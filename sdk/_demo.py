"""`tandem demo`: the hybrid client on real parts, through routing scenarios.

1. build (or reuse) a toy Llama with the toy-model factory and export it to a signed GGUF bundle (cached,
   signed with a demo key kept next to it);
2. start a cloud replica (CPU batching engine over the same model, API key, bundle distribution) on loopback;
3. start a HybridClient on a fresh "device" with no bundle, then play the scenarios: the bundle arriving by
   download (the cloud answers meanwhile), normal routing by difficulty, low battery and low memory (work
   moves to the cloud), the cloud going offline (everything on the device), and the replica killed in the
   middle of a streamed answer (the device continues it without a gap);
4. print every request's route: where it ran, why, the switches it took and its time to first token.

The task suite with trained teacher and student models, the gateway with two replicas and the
accuracy/cloud-share summary come with the routing-quality work.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

_DEMO_KEY = "tdm_demo_key"


def _demo_signing_key(folder: Path) -> Any:
    """The demo's Ed25519 key, made once and kept in the cache (never a production key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = folder / "demo-signing.key"
    if path.is_file():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    staged = path.with_suffix(".tmp")
    staged.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    staged.replace(path)
    return key


def _verifies(bundle: Path, key: Any) -> bool:
    from edge_runtime.bundle import verify_bundle
    from edge_runtime.errors import BundleError

    try:
        verify_bundle(bundle, [key.public_key()])
    except BundleError:
        return False
    return True


EASY = "Name a colour."
HARD = "Solve 48213 * 99172 - 381 and prove it step by step:\n```python\ndef check(x):"
KILL_AFTER_CHUNKS = 3
LINK_WAIT_S = 10.0


@dataclass
class Row:
    scenario: str
    prompt: str
    route: Any
    text: str


def _public_key_file(folder: Path, key: Any) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path = folder / "demo-signing.pub"
    if not path.is_file():
        staged = path.with_suffix(".tmp")
        staged.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        staged.replace(path)
    return path


async def _until(check: Any, timeout: float = LINK_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


class _Cloud:
    """The demo's cloud tier: one CPU replica on a fixed loopback port, which the scenarios stop and restart."""

    def __init__(self, folder: Path, bundle: Path, public_key: Path) -> None:
        from cloud_service.auth import hash_key
        from cloud_service.config import DistributionConfig, ModelConfig, ServerConfig, TenantConfig
        from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

        self.engine = CpuEngine(folder, name="toy", version="demo", options=CpuEngineOptions(max_running=8))
        self.config = ServerConfig(models=(ModelConfig("toy", folder, version="demo"),), host="127.0.0.1", port=0,
                                   tenants=(TenantConfig("demo", hash_key(_DEMO_KEY)),),
                                   distribution=DistributionConfig({"toy": (bundle,)}, (public_key,)))
        self.server: Any = None

    async def start(self) -> str:
        import dataclasses

        from cloud_service.server import ReplicaServer
        from cloud_service.servicer import ServedModel

        self.server = ReplicaServer(self.config, models=[ServedModel("toy", "demo", self.engine)])
        port = await self.server.start()
        self.config = dataclasses.replace(self.config, port=port)  # a restart comes back on the same port
        return f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0, close_engines=False)
            self.server = None

    def close(self) -> None:
        self.engine.close()


async def _ask(client: Any, rows: list[Row], scenario: str, prompt: str, max_tokens: int, **options: Any) -> Row:
    response = await client.chat.completions.create(messages=[{"role": "user", "content": prompt}],
                                                    max_tokens=max_tokens, temperature=0, **options)
    row = Row(scenario, prompt, response.route, response.choices[0].message.content)
    rows.append(row)
    return row


async def _hybrid(console: Console, folder: Path, bundle: Path, public_key: Path, device_dir: Path,
                  max_new_tokens: int) -> list[Row]:
    import shutil

    from sdk import AsyncHybridClient, Policy
    from sdk.policy import CloudSettings, DeviceSettings, RetrySettings, RoutingSettings
    from sdk.signals import Link

    shutil.rmtree(device_dir, ignore_errors=True)  # a fresh device: the bundle arrives by download
    cloud = _Cloud(folder, bundle, public_key)
    target = await cloud.start()
    policy = Policy(
        routing=RoutingSettings(mode="auto"),
        device=DeviceSettings(bundle=device_dir, trusted_keys=(public_key,), provision_bundle="toy"),
        cloud=CloudSettings(target=target, model="toy", api_key=_DEMO_KEY, tenant="demo", health_interval_s=0.25),
        retry=RetrySettings(breaker_reset_s=2.0),
    )
    rows: list[Row] = []
    steps = ("bundle arrives by download", "normal", "low battery", "low memory", "cloud offline",
             "replica killed mid-stream")
    try:
        async with AsyncHybridClient(policy) as client:
            hub = client.signals
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=console) as bar:
                task = bar.add_task("scenarios", total=len(steps))

                def step(index: int) -> None:
                    bar.update(task, completed=index, description=f"scenario: {steps[index]}")

                step(0)
                await _ask(client, rows, steps[0], EASY, max_new_tokens)
                assert client.provisioner is not None
                await client.provisioner.wait_ready(timeout=120)
                step(1)
                for prompt in (EASY, HARD, EASY, HARD):
                    await _ask(client, rows, steps[1], prompt, max_new_tokens)
                step(2)
                hub.override(battery_percent=7.0, charging=False)
                await _ask(client, rows, steps[2], EASY, max_new_tokens)
                hub.clear_override("battery_percent", "charging")
                step(3)
                hub.override(available_memory_bytes=16 << 20)
                await _ask(client, rows, steps[3], EASY, max_new_tokens)
                hub.clear_override("available_memory_bytes")
                step(4)
                await cloud.stop()
                await _until(lambda: hub.current().cloud.state is Link.DOWN)
                await _ask(client, rows, steps[4], HARD, max_new_tokens)
                await cloud.start()
                await _until(lambda: hub.current().cloud.state is Link.UP)
                step(5)
                stream = await client.chat.completions.create(
                    messages=[{"role": "user", "content": HARD}], max_tokens=160, temperature=0, stream=True,
                    mode="prefer_cloud")
                pieces: list[str] = []
                async with stream:
                    async for chunk in stream:
                        pieces.append(chunk.choices[0].delta.content)
                        if len(pieces) == KILL_AFTER_CHUNKS:
                            await cloud.stop()  # the replica dies under the stream
                rows.append(Row(steps[5], HARD, stream.route, "".join(pieces)))
                bar.update(task, completed=len(steps), description="scenarios: done")
                status = client.provisioner.status
    finally:
        await cloud.stop()
        cloud.close()
    console.print(f"bundle download: {status.bytes_done:,} bytes, {status.attempts} attempt(s), state {status.state}")
    return rows


def _show(console: Console, rows: list[Row]) -> None:
    table = Table(title="every request: where it ran and why (random weights: the words are noise)")
    for column in ("scenario", "prompt", "route", "reasons", "switches", "TTFT", "tokens"):
        table.add_column(column)
    for row in rows:
        route = row.route
        sides = " -> ".join(str(side) for side in route.sides) or str(route.side)
        switches = ", ".join(f"{s.kind} {s.from_side}->{s.to_side} ({s.reason}, after {s.after_tokens} tokens)"
                             for s in route.switches)
        ttft = f"{route.timings.ttft_s * 1000:.0f} ms" if route.timings.ttft_s is not None else "-"
        table.add_row(row.scenario, row.prompt[:24] + ("..." if len(row.prompt) > 24 else ""), sides,
                      ", ".join(route.reasons), switches or "-", ttft, str(route.tokens))
    console.print(table)
    killed = rows[-1]
    if killed.route.switches:
        cut = killed.route.switches[0].after_chars
        console.print(Panel(f"[dim]{escape(repr(killed.text[:cut]))}[/] + [bold]{escape(repr(killed.text[cut:]))}[/]",
                            title="replica killed mid-stream: the cloud's part (dim), continued on the device",
                            expand=False))
    cloud = sum(1 for row in rows if row.route.side == "cloud")
    console.print(f"{len(rows)} requests: {len(rows) - cloud} answered on the device, {cloud} in the cloud; "
                  f"{sum(len(row.route.switches) for row in rows)} switch(es), no answer lost.")


def run_demo(console: Console, cache_dir: Path, *, max_new_tokens: int) -> None:
    console.rule("[bold]Tandem demo")
    console.print(
        "[yellow]A toy model with random weights on both sides (the words are noise); the routing, downloads, "
        "fallbacks and failover are the real ones.[/]"
    )
    from export.toy_models import BUILD_STEPS, ToyModelSpec, cached_toy_model

    spec = ToyModelSpec.tiny("llama")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("toy model: cached?", total=len(BUILD_STEPS) + 1)
        folder = cached_toy_model(
            spec, cache_dir / "toy-models",
            on_step=lambda step: bar.update(task, description=f"toy model: {step}..."),
        )
        bar.update(task, completed=len(BUILD_STEPS), description="bundle: cached?")
        key = _demo_signing_key(cache_dir / "keys")
        bundle = cache_dir / "bundles" / f"{folder.name}-gguf-f16"
        if not _verifies(bundle, key):
            from export.gguf.pipeline import build_gguf_bundle
            from export.source import SourceModel

            bar.update(task, description="bundle: converting to GGUF and signing...")
            bundle.parent.mkdir(parents=True, exist_ok=True)
            build_gguf_bundle(SourceModel.open(folder), bundle, "f16", key, evaluation=None, overwrite=True)
        bar.update(task, completed=len(BUILD_STEPS) + 1, description=f"bundle: {bundle.name}")
    public_key = _public_key_file(cache_dir / "keys", key)
    rows = asyncio.run(_hybrid(console, folder, bundle, public_key, cache_dir / "device" / "toy", max_new_tokens))
    _show(console, rows)
