"""`tandem demo`: the end-to-end path that exists today, on the real parts.

The hybrid device/cloud demo (task suite, teacher and student, routing scenarios behind the gateway) arrives
with the SDK and routing-quality work. Until then the demo runs every piece that is built, end to end:

1. build (or reuse) a toy Llama with the toy-model factory;
2. export it to a signed GGUF bundle (cached, signed with a demo key kept next to it);
3. the device side: verify and load the bundle, stream an answer through llama.cpp with per-token logprobs;
4. the cloud side: start a replica (CPU batching engine over the same model) on a loopback port with an
   API key, and stream the same question through the gRPC client;
5. continue the device's half-finished answer in the cloud from its text (what the SDK's mid-stream
   failover will do), with nothing repeated or lost.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

_QUESTION = "What does Tandem do when the network drops?"
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


async def _stream(stream: Any) -> dict[str, Any]:
    started = time.perf_counter()
    first = last = started
    text, logprobs = [], []
    async for event in stream:
        last = time.perf_counter()
        if not logprobs:
            first = last
        text.append(event.text)
        if event.logprob is not None:
            logprobs.append(event.logprob)
    return {"text": "".join(text), "pieces": text, "tokens": len(logprobs), "ttft": first - started,
            "seconds": last - started, "logprobs": logprobs}


async def _device_and_cloud(console: Console, folder: Path, bundle: Path, key: Any, max_new_tokens: int) -> None:
    from cloud_service.auth import hash_key
    from cloud_service.client import CloudClient
    from cloud_service.config import ModelConfig, ServerConfig, TenantConfig
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions
    from cloud_service.server import ReplicaServer
    from cloud_service.servicer import ServedModel
    from edge_runtime import GenerationRequest, Message, SamplingParams, load_bundle

    question = [Message("user", _QUESTION)]
    greedy = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, ignore_eos=True)
    request = GenerationRequest(messages=question, sampling=greedy)
    device = load_bundle(bundle, trusted_keys=[key.public_key()])
    assert device.template is not None
    console.print(Panel(device.template.render(question), title="prompt (the bundle's chat template)", expand=False))
    on_device = await _stream(device.generate(request))

    engine = CpuEngine(folder, name="toy", version="demo", options=CpuEngineOptions(max_running=8))
    config = ServerConfig(models=(ModelConfig("toy", folder, version="demo"),), port=0,
                          tenants=(TenantConfig("demo", hash_key(_DEMO_KEY)),))
    server = ReplicaServer(config, models=[ServedModel("toy", "demo", engine)])
    port = await server.start()
    try:
        async with CloudClient(f"127.0.0.1:{port}", api_key=_DEMO_KEY) as cloud:
            in_cloud = await _stream(cloud.generate(request, model="toy"))
            half = "".join(on_device["pieces"][: len(on_device["pieces"]) // 2])  # cut at a token boundary
            rest_sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens - len(on_device["pieces"]) // 2,
                                           ignore_eos=True)
            rest = GenerationRequest(messages=question, sampling=rest_sampling, assistant_prefix=half)
            continued = await _stream(cloud.generate(rest, model="toy"))
    finally:
        await server.stop(0.5)
        device.close()

    console.print(Panel(repr(on_device["text"]), title="device (llama.cpp, signed GGUF bundle)", expand=False))
    console.print(Panel(repr(in_cloud["text"]), title=f"cloud (gRPC replica on port {port}, CPU engine)",
                        expand=False))
    console.print(Panel(f"[dim]{half!r}[/] + {continued['text']!r}",
                        title="device's half answer (dim), continued in the cloud from its text", expand=False))
    table = Table(title="figures (random weights: the words are noise, every step is real)")
    for column in ("side", "tokens", "time to first token", "total", "mean logprob"):
        table.add_column(column, justify="right")
    for side, run in (("device", on_device), ("cloud", in_cloud), ("cloud, continued", continued)):
        mean = sum(run["logprobs"]) / max(len(run["logprobs"]), 1)
        table.add_row(side, f"{run['tokens']} tokens in {run['seconds']:.2f} s", f"{run['ttft'] * 1000:.1f} ms",
                      f"{run['tokens'] / max(run['seconds'], 1e-9):.0f} tokens/s", f"{mean:.2f}")
    console.print(table)


def run_demo(console: Console, cache_dir: Path, *, max_new_tokens: int) -> None:
    console.rule("[bold]Tandem demo")
    console.print(
        "[yellow]The hybrid routing demo arrives with the SDK; this runs every part built so far: toy model -> "
        "signed GGUF bundle -> device engine (llama.cpp) -> cloud replica over gRPC -> cloud continuing the "
        "device's partial answer.[/]"
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
    asyncio.run(_device_and_cloud(console, folder, bundle, key, max_new_tokens))
