"""The SDK's own cost: the routing decision, mid-stream failover, and tokens/s through the SDK vs the engines.

    python -m benchmarks.sdk [--json] [--quick] [--rounds N] [--tokens N] [--failover-rounds N]
                             [--failover-tokens N] [--decisions N] [--threads N] [--cache DIR]

Model: a 29M-parameter Llama from the toy factory (random weights, float32) served as-is by a replica's CPU
engine and, on the device, as a signed GGUF q8_0 bundle built from the same folder; one thread each by
default (the other core is the app's / the client's). Why this size and not the ~100M model of
``benchmarks.edge``: a token costs a few milliseconds on the device (llama.cpp) and several times that in the
replica (transformers), so per-token work is the model's, not Python's, while the SDK's per-token Python is still
a visible share of the device's (on the 100M model it would hide in the noise); and a 256-token round
takes under a second on the device, so many alternating rounds fit in the quiet spells of this shared 2-core
machine. The replica is its own process (``tandem cloud serve``) on a loopback port, as a cloud would be.

What is measured (``--json`` prints one object with these keys, plus details):

- ``decision_p50_us`` / ``decision_p99_us``: wall time of ``Orchestrator.decide()`` (difficulty heuristic +
  ``decide``) of an AsyncHybridClient in ``auto`` mode with the default SignalHub (psutil providers and the
  link monitor checking the live replica, both warm), the bundle loaded, over ``--decisions`` calls cycling
  through the ``DECISION_REQUESTS`` (short, 1,400-character prose, code, math, multi-turn; built
  beforehand). ``decision.by_request`` splits them by request; ``decision.cpu_p99_us`` is the calling
  thread's CPU time per call from a second pass (preemption by other processes shows in wall time only).
  The edge/cloud rows add ``decision_in_request_us_p50``: the route's own ``timings.decision_us`` in real
  requests (caches cold after a generation). Goal: p99 < 50 us.
- ``failover_ms``: a ``prefer_cloud`` stream; after ``FAILOVER_AFTER_CHUNKS`` chunks the replica process is
  killed (SIGKILL); the device (bundle loaded beforehand, with another prompt) continues the answer. Measured
  from the moment the client observes the break (the error leaving the SDK's cloud side: a forwarding wrapper
  around ``orchestrator.sides[Side.CLOUD]`` notes the time) to the first chunk with text the caller receives
  after the switch (the one that starts at the route's ``switch.after_chars``). Median over
  ``--failover-rounds`` rounds, each with a fresh replica and client. Also reported:
  ``failover_from_kill_ms`` (from just before the kill) and ``failover.break_detect_ms`` (kill -> observed:
  the kernel closes the killed replica's sockets as it tears the process down).
  Goal: < 250 ms.
- ``overhead_ratio_edge``: tokens/s through ``AsyncHybridClient`` (``local_only``, ``stream=True``, greedy)
  over tokens/s of the engine ``edge_runtime.load_bundle`` gave that client, called directly
  (``engine.generate``): the same engine instance on both sides, because two engines of one bundle differ by
  a few % in speed (BENCHMARKS.md, "SDK"); before each run the engine answers an
  unrelated one-token chat (untimed), so neither side reuses the other's KV cache.
  ``overhead_ratio_cloud``: the same with ``cloud_only`` over ``cloud_service.client.CloudClient.generate``
  against the same replica. Tokens/s = completion tokens / (call -> last chunk or event), so the SDK's
  decision, request checks and chunk objects all count. Each round runs every side on the same prompt
  (another prompt every round), the order rotating, ``PAUSE`` apart, after one warm-up each; all must
  produce the same number of tokens. The figure is median SDK / median direct (as in ``benchmarks.edge``);
  ``paired_ratio`` (median of per-round ratios, 95 % bootstrap interval), the decode-only ratio (first ->
  last token) and ``cpu_overhead_us_per_token`` (this process's extra CPU time per token through the SDK)
  come with it. ``edge.sync`` is the blocking ``HybridClient`` against its own engine (extra, no goal). A
  round during which other processes (not this one, not the replica) took more than ``OTHER_CPU_MAX`` of the
  cores is measured again, at most ``rounds / REMEASURE_SHARE`` times in all (``other_cpu_pct_*`` say how
  busy the kept rounds were). Goal: >= 0.97 each.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.edge import signing_key
from benchmarks.quiet import OtherCpuBut, median_ci
from edge_runtime import GenerationRequest, LocalEngine, Message, SamplingParams
from edge_runtime.errors import EdgeRuntimeError
from export.toy_models import ToyModelSpec, cached_toy_model
from sdk import AsyncHybridClient, HybridClient, Mode, Reason, Side, SwitchKind
from sdk.client import build_request
from sdk.policy import CloudSettings, DeviceSettings, Policy, RoutingSettings
from sdk.signals import Link, SignalHub, StaticSignals

MODEL_SPEC = ToyModelSpec(
    arch="llama", hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1536,
    vocab_size=8192, max_position_embeddings=2048, init_std=0.02, corpus_lines=20000, seed=0,
)
QUANTIZATION = "q8_0"
MODEL_NAME = "bench"
API_KEY = "tdm_benchmark_sdk"
TENANT = "bench"
GOALS = {"decision_p99_max_us": 50.0, "failover_max_ms": 250.0, "overhead_ratio_min": 0.97}
FAILOVER_AFTER_CHUNKS = 3
"""The replica is killed when the caller has received this many chunks (a replica sends one per stream every
25 ms or more, so a fast model's answer may arrive in a few dozen chunks)."""
PAUSE = 0.05
"""Seconds between two generations, so one side's spinning threads do not slow the other's start."""
OTHER_CPU_MAX = 0.05
"""Share of all cores other processes may take during a round before it is measured again."""
OTHER_CPU_FLOOR_S = 0.05
REMEASURE_SHARE = 3
"""At most rounds / this many rounds are measured again: on a machine that stays busy, waiting gains nothing."""
FORGET_PROMPT = "Good morning"
WARMUP_PROMPT = 999
"""prompt(WARMUP_PROMPT) warms each side up; measured rounds use prompt(0), prompt(1)..."""
FAILOVER_PROMPT = 500
"""Failover round i streams prompt(FAILOVER_PROMPT + i)."""
DECISION_WARMUP = 1000
REPLICA_START_TIMEOUT_S = 120.0
LINK_UP_TIMEOUT_S = 10.0
STATIC_MEMORY_BYTES = 8 << 30
BUNDLE_FOLDER = "sdk-bundles"
KEY_FILE = "signing.pub"  # benchmarks.edge.signing_key writes it next to the private key

OPENINGS = ("Tell", "Describe", "Explain", "Write", "Summarize", "List", "Compare", "Imagine", "Recall", "Name")
DECISION_REQUESTS: dict[str, tuple[dict[str, str], ...]] = {
    "short": ({"role": "user", "content": "Tell me about the river"},),
    "long_prose": ({"role": "user", "content": "Describe the old harbour town, its markets, its boats and its "
                                               "people. " * 20},),  # 1,400 characters
    "code": ({"role": "user", "content": "Fix this:\n```python\ndef f(x):\n    return x +\n```"},),
    "math": ({"role": "user", "content": "Solve 123456789 * 987654321 and prove the result"},),
    "multi_turn": ({"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "What is the weather like?"}),
}
"""The requests the decision is timed on, in turn (each with max_tokens unset, 64 and 1024)."""


# -- the model, the bundle, the replica ----------------------------------------------------------------------


def prepare_bundle(model: Path, cache: Path, log: Callable[[str], None]) -> tuple[Path, Path]:
    """(signed GGUF bundle of ``model``, public key file), built once under ``cache``; the bundle is rebuilt
    when it fails verification."""
    from edge_runtime.bundle import verify_bundle

    folder = cache / BUNDLE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    private, public = signing_key(folder)
    out = folder / f"{model.name}-gguf-{QUANTIZATION}"
    try:
        verify_bundle(out, [public])
    except EdgeRuntimeError as exc:
        from benchmarks.export import MEASURE_ONLY
        from export.gguf.pipeline import build_gguf_bundle
        from export.quality import Evaluation
        from export.source import SourceModel
        from export.toy_models.corpus import corpus_lines

        log(f"building {out.name} ({exc.__class__.__name__})")
        evaluation = Evaluation("\n".join(corpus_lines(200, seed=4242)), MEASURE_ONLY, 64, 2)
        build_gguf_bundle(SourceModel.open(model), out, QUANTIZATION, private, evaluation=evaluation,
                          overwrite=True)
    return out, folder / KEY_FILE


class Replica:
    """``tandem cloud serve`` in its own process on a loopback port; its log goes to a file (a pipe nobody
    reads would fill up and stall it). Starting returns at once; ``wait_ready`` waits for the port."""

    def __init__(self, model: Path, work: Path, threads: int, index: int) -> None:
        config = work / f"replica-{index}.toml"
        config.write_text(
            f'[server]\nport = 0\n[limits]\nmax_tokens = 4096\n'
            f'[[models]]\nname = "{MODEL_NAME}"\npath = "{model}"\nversion = "v1"\n'
            f"[models.cpu]\nmax_running = 4\nthreads = {threads}\n"
            f'[[tenants]]\nname = "{TENANT}"\nkey_sha256 = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"\n'
            "requests_per_minute = 1000000\ntokens_per_minute = 1000000000\n"
        )
        self.log_file = work / f"replica-{index}.log"
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tandem", "cloud", "serve", "-c", str(config)], stdout=subprocess.DEVNULL,
                stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self) -> Replica:
        deadline = time.monotonic() + REPLICA_START_TIMEOUT_S
        while not self.port and time.monotonic() < deadline:
            for line in self.log_file.read_text().splitlines():
                if '"message": "serving"' in line:
                    self.port = int(json.loads(line)["port"])
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            self.close()
            raise RuntimeError(f"the replica did not start; its log:\n{self.log_file.read_text()[-2000:]}")
        return self

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """A crash: SIGKILL, no drain."""
        os.kill(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


# -- policies and requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    bundle: Path
    key: Path
    threads: int
    context: int

    def policy(self, mode: Mode, target: str | None, *, device: bool = True) -> Policy:
        cloud = CloudSettings(target=target, model=MODEL_NAME, api_key=API_KEY, tenant=TENANT,
                              timeout_s=600.0, first_token_timeout_s=60.0) if target else CloudSettings()
        settings = DeviceSettings(bundle=self.bundle, trusted_keys=(self.key,), context_length=self.context,
                                  threads=self.threads) if device else DeviceSettings()
        return Policy(routing=RoutingSettings(mode=mode), device=settings, cloud=cloud)


def static_hub() -> SignalHub:
    """Fixed readings, no link monitor: every request routes the same way."""
    return SignalHub.from_static(StaticSignals(available_memory_bytes=STATIC_MEMORY_BYTES))


def prompt(index: int) -> str:
    return f"{OPENINGS[index % len(OPENINGS)]} the story of the harbour town number {index} and its river."


def direct_request(text: str, tokens: int) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),), sampling=SamplingParams(temperature=0,
                                                                                        max_tokens=tokens))


# -- one generation per side ---------------------------------------------------------------------------------


@dataclass
class Run:
    tokens: int
    started: float
    first: float
    last: float
    cpu: float
    """CPU seconds this process spent in the call (all its threads)."""
    decision_us: float | None = None

    @property
    def tps(self) -> float:
        """Completion tokens per second of the whole call."""
        return self.tokens / (self.last - self.started)

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / (self.last - self.first)


async def sdk_run(client: AsyncHybridClient, text: str, tokens: int, side: Side) -> Run:
    cpu = time.process_time()
    started = time.perf_counter()
    first = 0.0
    stream = await client.chat.completions.create(messages=[{"role": "user", "content": text}], max_tokens=tokens,
                                                  temperature=0, stream=True)
    async with stream:
        async for _chunk in stream:
            last = time.perf_counter()
            if not first:
                first = last
    route = stream.route
    if route.side is not side or route.switches:
        raise RuntimeError(f"the SDK answered on {route.side} with switches {route.switches}; expected {side}")
    cpu = time.process_time() - cpu
    return Run(route.tokens, started, first, last, cpu, route.timings.decision_us)


async def events_run(stream: Any, started: float, cpu: float) -> Run:
    tokens, first = 0, 0.0
    async for event in stream:
        last = time.perf_counter()
        if not first:
            first = last
        tokens += event.token_id is not None
    return Run(tokens, started, first, last, time.process_time() - cpu)


async def engine_run(engine: LocalEngine, text: str, tokens: int) -> Run:
    cpu = time.process_time()
    started = time.perf_counter()
    return await events_run(engine.generate(direct_request(text, tokens)), started, cpu)


async def cloud_run(cloud: Any, text: str, tokens: int) -> Run:
    cpu = time.process_time()
    started = time.perf_counter()
    return await events_run(cloud.generate(direct_request(text, tokens), model=MODEL_NAME), started, cpu)


# -- alternating rounds --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rounds:
    count: int
    tokens: int
    other_cpu_max: float
    """Share of the cores other processes may take in a round before it is measured again (1: never)."""


def compare(runs: list[Run], direct: list[Run]) -> dict[str, Any]:
    """One side's figures against the direct call's, from paired runs."""
    side_tps = statistics.median(r.tps for r in runs)
    direct_tps = statistics.median(d.tps for d in direct)
    paired = median_ci([r.tps / d.tps for r, d in zip(runs, direct, strict=True)])
    return {
        "ratio": side_tps / direct_tps,
        "sdk_tps": side_tps,
        "direct_tps": direct_tps,
        "paired_ratio": paired[0],
        "paired_ratio_ci95": [paired[1], paired[2]],
        "decode_ratio": statistics.median(r.decode_tps for r in runs) / statistics.median(d.decode_tps for d in direct),
        "cpu_overhead_us_per_token": statistics.median(
            1e6 * (r.cpu - d.cpu) / r.tokens for r, d in zip(runs, direct, strict=True)),
        "decision_in_request_us_p50": statistics.median(r.decision_us or 0.0 for r in runs),
    }


@dataclass(frozen=True)
class Contender:
    run: Callable[[str], Awaitable[Run]]
    """One timed generation of the given prompt."""
    reset: Callable[[], Awaitable[object]] | None = None
    """Untimed, before each run: make the engine forget the previous sequence (see ``forget``)."""


async def alternate(sides: dict[str, Contender], baselines: dict[str, str], rounds: Rounds,
                    exclude_pids: tuple[int, ...], log: Callable[[str], None]) -> dict[str, Any]:
    """One warm-up per side, then ``rounds.count`` rounds that run every side on one prompt, the order rotating
    from round to round; each side named in ``baselines`` compared with its baseline ("sdk" at the top level,
    the others under their names)."""
    names = list(sides)
    for name in names:
        await sides[name].run(prompt(WARMUP_PROMPT))
    kept: dict[str, list[Run]] = {name: [] for name in names}
    discarded, shares, cores = 0, [], os.cpu_count() or 1
    index = 0
    while len(kept[names[0]]) < rounds.count:
        text, runs, turn = prompt(index), {}, index % len(names)
        started = time.perf_counter()
        with OtherCpuBut(exclude_pids) as meter:
            for name in names[turn:] + names[:turn]:
                side = sides[name]
                if side.reset is not None:
                    await side.reset()
                await asyncio.sleep(PAUSE)
                runs[name] = await side.run(text)
        index += 1
        elapsed = time.perf_counter() - started
        share = meter.seconds / (elapsed * cores)
        disturbed = meter.seconds > max(rounds.other_cpu_max * elapsed * cores, OTHER_CPU_FLOOR_S)
        if disturbed and discarded < rounds.count // REMEASURE_SHARE:
            discarded += 1
            log(f"  other processes took {100 * share:.0f} % of the CPU; measuring the round again")
            continue
        counts = {name: run.tokens for name, run in runs.items()}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"the same greedy request gave different token counts: {counts}")
        for name, run in runs.items():
            kept[name].append(run)
        shares.append(100 * share)
    tokens = [run.tokens for run in kept[names[0]]]
    return {
        **compare(kept["sdk"], kept[baselines["sdk"]]),
        **{name: compare(kept[name], kept[base]) for name, base in baselines.items() if name != "sdk"},
        "tokens_min": min(tokens),
        "tokens_median": statistics.median(tokens),
        "rounds": len(tokens),
        "discarded_rounds": discarded,
        "other_cpu_pct_median": statistics.median(shares),
        "other_cpu_pct_max": max(shares),
    }


async def forget(engine: LocalEngine) -> None:
    """One token of an unrelated chat: the engine reuses the KV cache of the prefix a prompt shares with the
    previous sequence, so without this the second side to run a round's prompt would skip its prefill."""
    await engine_run(engine, FORGET_PROMPT, 1)


def sync_stream(client: HybridClient, text: str, tokens: int, side: Side) -> Run:
    """sdk_run through the blocking client (run in a worker thread, timed inside it)."""
    cpu = time.process_time()
    started = time.perf_counter()
    first = 0.0
    with client.chat.completions.create(messages=[{"role": "user", "content": text}], max_tokens=tokens,
                                        temperature=0, stream=True) as stream:
        for _chunk in stream:
            last = time.perf_counter()
            if not first:
                first = last
    route = stream.route
    if route.side is not side or route.switches:
        raise RuntimeError(f"the SDK answered on {route.side} with switches {route.switches}; expected {side}")
    return Run(route.tokens, started, first, last, time.process_time() - cpu, route.timings.decision_us)


async def overhead_edge(setup: Setup, rounds: Rounds, log: Callable[[str], None]) -> dict[str, Any]:
    """AsyncHybridClient in local_only vs its own engine called directly, and the same for HybridClient ("sync").
    Each client's engine serves both of its sides: two engines of one bundle differ by a few % in speed."""
    policy = setup.policy(Mode.LOCAL_ONLY, None)
    blocking = await asyncio.to_thread(HybridClient, policy, signals=static_hub())
    try:
        async with AsyncHybridClient(policy, signals=static_hub()) as client:
            await client.chat.completions.create(messages=[{"role": "user", "content": FORGET_PROMPT}],
                                                 max_tokens=1)
            await asyncio.to_thread(blocking.chat.completions.create,
                                    messages=[{"role": "user", "content": FORGET_PROMPT}], max_tokens=1)
            engine = await client.edge.engine()  # type: ignore[union-attr]
            blocking_engine = await blocking.aio.edge.engine()  # type: ignore[union-attr]  # loaded: no lock used
            tokens = rounds.tokens
            return await alternate({
                "sdk": Contender(lambda text: sdk_run(client, text, tokens, Side.DEVICE), lambda: forget(engine)),
                "direct": Contender(lambda text: engine_run(engine, text, tokens), lambda: forget(engine)),
                "sync": Contender(lambda text: asyncio.to_thread(sync_stream, blocking, text, tokens, Side.DEVICE),
                                  lambda: forget(blocking_engine)),
                "sync_direct": Contender(lambda text: engine_run(blocking_engine, text, tokens),
                                         lambda: forget(blocking_engine)),
            }, {"sdk": "direct", "sync": "sync_direct"}, rounds, (), log)
    finally:
        await asyncio.to_thread(blocking.close)


async def overhead_cloud(setup: Setup, replica: Replica, rounds: Rounds, log: Callable[[str], None]
                         ) -> dict[str, Any]:
    """AsyncHybridClient in cloud_only vs CloudClient, against the same replica (its CPU engine keeps no KV cache
    between requests)."""
    from cloud_service.client import CloudClient

    policy = setup.policy(Mode.CLOUD_ONLY, replica.target, device=False)
    async with (CloudClient(replica.target, api_key=API_KEY, tenant=TENANT, timeout_s=600.0) as cloud,
                AsyncHybridClient(policy, signals=static_hub()) as client):
        return await alternate({
            "sdk": Contender(lambda text: sdk_run(client, text, rounds.tokens, Side.CLOUD)),
            "direct": Contender(lambda text: cloud_run(cloud, text, rounds.tokens)),
        }, {"sdk": "direct"}, rounds, (replica.process.pid,), log)


# -- the decision --------------------------------------------------------------------------------------------


def _percentiles(nanoseconds: list[int]) -> dict[str, float]:
    ordered = sorted(nanoseconds)
    return {"p50_us": ordered[len(ordered) // 2] / 1e3,
            "p99_us": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e3, "max_us": ordered[-1] / 1e3}


async def decision_latency(setup: Setup, replica: Replica, calls: int) -> dict[str, Any]:
    """decide() of an auto-mode client with psutil signals and a live link monitor, warm: wall time per call
    (the figure), then the calling thread's CPU time per call in a second pass (preemption by other
    processes on a busy machine shows in the first, not in the second)."""
    async with AsyncHybridClient(setup.policy(Mode.AUTO, replica.target)) as client:
        await client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                             temperature=0, mode="local_only")  # loads the bundle
        deadline = time.monotonic() + LINK_UP_TIMEOUT_S
        while client.signals.current().cloud.state is not Link.UP and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        signals = client.signals.current()
        requests = [(kind, build_request(list(messages), max_tokens=tokens, temperature=0))
                    for kind, messages in DECISION_REQUESTS.items() for tokens in (None, 64, 1024)]
        decide = client.orchestrator.decide
        for index in range(DECISION_WARMUP):
            decide(requests[index % len(requests)][1], Mode.AUTO)
        wall: dict[str, list[int]] = {kind: [] for kind in DECISION_REQUESTS}
        targets: dict[str, int] = {}
        clock = time.perf_counter_ns
        for index in range(calls):
            kind, request = requests[index % len(requests)]
            started = clock()
            decision, _ = decide(request, Mode.AUTO)
            wall[kind].append(clock() - started)
            targets[str(decision.target)] = targets.get(str(decision.target), 0) + 1
        cpu: list[int] = []
        clock = time.thread_time_ns
        for index in range(calls):
            request = requests[index % len(requests)][1]
            started = clock()
            decide(request, Mode.AUTO)
            cpu.append(clock() - started)
    every = [value for values in wall.values() for value in values]
    return {
        **_percentiles(every),
        "cpu_p99_us": _percentiles(cpu)["p99_us"],
        "by_request": {kind: _percentiles(values) | {"chars": sum(len(m["content"]) for m in DECISION_REQUESTS[kind])}
                       for kind, values in wall.items()},
        "calls": calls,
        "targets": targets,
        "cloud_link": str(signals.cloud.state),
        "available_memory_known": signals.available_memory_bytes is not None,
    }


# -- failover ------------------------------------------------------------------------------------------------


class BreakObserver:
    """Forwards to the SDK's cloud side and notes when an error leaves its stream: the moment the client
    observes the break (before the orchestrator decides what to do about it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.side = inner.side
        self.failed_at: float | None = None

    def generate(self, request: GenerationRequest) -> _WatchedStream:
        return _WatchedStream(self.inner.generate(request), self)


class _WatchedStream:
    """A side's stream (its model, version and vocabulary as it learns them) whose failure time is noted."""

    def __init__(self, inner: Any, observer: BreakObserver) -> None:
        self.inner = inner
        self.observer = observer

    def __getattr__(self, name: str) -> Any:  # model, version, vocabulary: the inner stream's, as they change
        return getattr(self.inner, name)

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await anext(self.inner)
        except StopAsyncIteration:
            raise
        except Exception:
            self.observer.failed_at = time.perf_counter()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


async def failover_round(setup: Setup, replica: Replica, tokens: int, index: int) -> dict[str, float]:
    """One prefer_cloud stream whose replica is killed after FAILOVER_AFTER_CHUNKS chunks."""
    async with AsyncHybridClient(setup.policy(Mode.PREFER_CLOUD, replica.target), signals=static_hub()) as client:
        warm = [{"role": "user", "content": FORGET_PROMPT}]
        for mode in ("local_only", "cloud_only"):  # the bundle loaded, the channel connected
            await client.chat.completions.create(messages=warm, max_tokens=4, temperature=0, mode=mode)
        observer = BreakObserver(client.orchestrator.sides[Side.CLOUD])
        client.orchestrator.sides[Side.CLOUD] = observer
        chunks, chars, killed_at, first_device = 0, 0, 0.0, 0.0
        question = [{"role": "user", "content": prompt(FAILOVER_PROMPT + index)}]
        stream = await client.chat.completions.create(messages=question, max_tokens=tokens, temperature=0, stream=True)
        async with stream:  # leaving it early cancels the rest of the device's answer
            async for chunk in stream:
                now = time.perf_counter()
                text = chunk.choices[0].delta.content or ""
                if killed_at:
                    switches = stream.route.switches
                    if switches and chars >= switches[0].after_chars and text:
                        first_device = now
                        break
                chars += len(text)
                chunks += 1
                if chunks == FAILOVER_AFTER_CHUNKS:
                    killed_at = time.perf_counter()
                    replica.kill()
            route = stream.route
    if not first_device or observer.failed_at is None or len(route.switches) != 1:
        raise RuntimeError(f"round {index}: expected one failover after the kill (increase --failover-tokens if "
                           f"the answer ended first), got {route.switches} after {route.tokens} tokens")
    [switch] = route.switches
    if (switch.kind, switch.from_side, switch.to_side, switch.reason) != (
            SwitchKind.FAILOVER, Side.CLOUD, Side.DEVICE, Reason.STREAM_BROKEN):
        raise RuntimeError(f"round {index}: unexpected switch {switch}")
    return {
        "failover_ms": 1000 * (first_device - observer.failed_at),
        "from_kill_ms": 1000 * (first_device - killed_at),
        "break_detect_ms": 1000 * (observer.failed_at - killed_at),
        "after_tokens": switch.after_tokens,
    }


# -- main ----------------------------------------------------------------------------------------------------


async def measure(setup: Setup, replica: Replica, model: Path, work: Path, options: argparse.Namespace,
                  rounds: Rounds, log: Callable[[str], None]) -> dict[str, Any]:
    """Every figure, with ``replica`` (started) serving ``model``; it is killed by the first failover round and
    each later round starts its own."""
    replicas = [replica]
    try:
        await asyncio.to_thread(replica.wait_ready)
        log("decision ...")
        decision = await decision_latency(setup, replica, options.decisions)
        log("tokens/s through the SDK vs the engine, on the device ...")
        edge = await overhead_edge(setup, rounds, log)
        log(f"  ratio {edge['ratio']:.3f}")
        log("tokens/s through the SDK vs CloudClient, against the replica ...")
        cloud = await overhead_cloud(setup, replica, rounds, log)
        log(f"  ratio {cloud['ratio']:.3f}")
        log("failover ...")
        failovers = []
        for index in range(options.failover_rounds):
            if not replica.alive:
                replica = Replica(model, work, options.threads, index)
                replicas.append(replica)
                await asyncio.to_thread(replica.wait_ready)
            failovers.append(await failover_round(setup, replica, options.failover_tokens, index))
            log(f"  round {index}: {failovers[-1]['failover_ms']:.1f} ms")
    finally:
        for started in replicas:
            await asyncio.to_thread(started.close)

    def median(key: str) -> float:
        return statistics.median(f[key] for f in failovers)

    return {
        "decision_p50_us": decision["p50_us"],
        "decision_p99_us": decision["p99_us"],
        "failover_ms": median("failover_ms"),
        "failover_from_kill_ms": median("from_kill_ms"),
        "overhead_ratio_edge": edge["ratio"],
        "overhead_ratio_cloud": cloud["ratio"],
        "decision": decision,
        "failover": {"break_detect_ms": median("break_detect_ms"), "rounds": failovers,
                     "after_chunks": FAILOVER_AFTER_CHUNKS},
        "edge": edge,
        "cloud": cloud,
    }


def goals(results: dict[str, Any]) -> dict[str, Any]:
    met = {
        "decision_p99": results["decision_p99_us"] < GOALS["decision_p99_max_us"],
        "failover": results["failover_ms"] < GOALS["failover_max_ms"],
        "overhead_ratio_edge": results["overhead_ratio_edge"] >= GOALS["overhead_ratio_min"],
        "overhead_ratio_cloud": results["overhead_ratio_cloud"] >= GOALS["overhead_ratio_min"],
    }
    return GOALS | {"met": met, "all_met": all(met.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tandem" / "benchmarks")
    parser.add_argument("--rounds", type=int, default=None, help="overhead rounds per side (default 15, quick 1)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per overhead round (default 256, quick 16)")
    parser.add_argument("--failover-rounds", type=int, default=None, help="default 7, quick 1")
    parser.add_argument("--failover-tokens", type=int, default=None,
                        help="max_tokens of a failover stream; long, so that the replica is still generating when "
                             "it is killed (the stream is left at the first device chunk) (default 1000, quick 400)")
    parser.add_argument("--decisions", type=int, default=None, help="timed decide() calls (default 20000, quick 2000)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of the device engine (both sides) and of the replica's torch (default 1: "
                             "one core for the model, one for the app / client)")
    parser.add_argument("--quick", action="store_true", help="smoke run on the tiny toy model (figures meaningless)")
    options = parser.parse_args(argv)
    quick = options.quick
    options.rounds = options.rounds or (1 if quick else 15)
    options.tokens = options.tokens or (16 if quick else 256)
    options.failover_rounds = options.failover_rounds or (1 if quick else 7)
    options.failover_tokens = options.failover_tokens or (400 if quick else 1000)
    options.decisions = options.decisions or (2000 if quick else 20000)
    if options.failover_tokens <= FAILOVER_AFTER_CHUNKS + 8:
        parser.error(f"--failover-tokens must exceed {FAILOVER_AFTER_CHUNKS + 8}: the break comes after "
                     f"{FAILOVER_AFTER_CHUNKS} chunks")
    console = Console(stderr=True)
    options.cache.mkdir(parents=True, exist_ok=True)
    spec = ToyModelSpec.tiny("llama") if quick else MODEL_SPEC
    started = time.perf_counter()
    model = cached_toy_model(spec, options.cache)
    with tempfile.TemporaryDirectory() as work:
        replica = Replica(model, Path(work), options.threads, 0)  # boots while the bundle is checked or built
        try:
            bundle, key = prepare_bundle(model, options.cache, console.print)
        except BaseException:
            replica.close()
            raise
        context = spec.max_position_embeddings
        setup = Setup(bundle, key, options.threads, context)
        rounds = Rounds(options.rounds, options.tokens, 1.0 if quick else OTHER_CPU_MAX)
        results = asyncio.run(measure(setup, replica, model, Path(work), options, rounds, console.print))
    manifest = json.loads((bundle / "manifest.json").read_text())
    results = {
        "model": {"name": model.name, "parameters": manifest["parameters"], "device_bundle": f"gguf {QUANTIZATION}",
                  "cloud_engine": "cpu float32", "threads": options.threads, "context_length": context,
                  "overhead_rounds": options.rounds, "overhead_tokens": options.tokens,
                  "failover_rounds": options.failover_rounds, "failover_tokens": options.failover_tokens,
                  "quick": quick},
        **results,
        "seconds": time.perf_counter() - started,
    }
    results["goals"] = goals(results)
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    console, model, goals_ = Console(), results["model"], results["goals"]
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title=(f"SDK cost: {model['parameters']:,}-parameter Llama (device {model['device_bundle']}, "
                         f"cloud {model['cloud_engine']}), {model['threads']} thread(s)"))
    for column in ("figure", "value", "goal", "met", "detail"):
        table.add_column(column, justify="right")
    decision, failover = results["decision"], results["failover"]

    def met(key: str) -> str:
        return "yes" if goals_["met"][key] else "NO"

    kinds = ", ".join(f"{kind} {row['p50_us']:.0f}/{row['p99_us']:.0f}" for kind, row in decision["by_request"].items())
    table.add_row("decision p50", f"{results['decision_p50_us']:.1f} us", "", "",
                  f"{decision['calls']} calls, targets {decision['targets']}, link {decision['cloud_link']}")
    table.add_row("decision p99", f"{results['decision_p99_us']:.1f} us", f"< {goals_['decision_p99_max_us']:g} us",
                  met("decision_p99"), f"CPU-time p99 {decision['cpu_p99_us']:.1f} us; p50/p99 us: {kinds}")
    table.add_row("failover", f"{results['failover_ms']:.1f} ms", f"< {goals_['failover_max_ms']:g} ms",
                  met("failover"), f"from the kill {results['failover_from_kill_ms']:.1f} ms; break seen "
                  f"{failover['break_detect_ms']:.1f} ms after the kill; {len(failover['rounds'])} rounds")
    rows = [("edge", results["edge"], "overhead_ratio_edge"), ("cloud", results["cloud"], "overhead_ratio_cloud")]
    if "sync" in results["edge"]:
        rows.insert(1, ("edge, HybridClient", results["edge"]["sync"], None))
    for name, row, key in rows:
        low, high = row["paired_ratio_ci95"]
        table.add_row(f"overhead ratio {name}", f"{row['ratio']:.3f}",
                      f">= {goals_['overhead_ratio_min']:g}" if key else "", met(key) if key else "",
                      f"{row['sdk_tps']:.0f} / {row['direct_tps']:.0f} tok/s; paired {row['paired_ratio']:.3f} "
                      f"[{low:.3f}, {high:.3f}]; decode {row['decode_ratio']:.3f}; "
                      f"+{row['cpu_overhead_us_per_token']:.0f} us CPU/token")
    console.print(table)
    edge, cloud = results["edge"], results["cloud"]
    console.print(f"Overhead rounds kept: edge {edge['rounds']} ({edge['discarded_rounds']} measured again; other "
                  f"processes took {edge['other_cpu_pct_median']:.0f} % of the CPU, up to "
                  f"{edge['other_cpu_pct_max']:.0f} %), cloud {cloud['rounds']} ({cloud['discarded_rounds']} again; "
                  f"{cloud['other_cpu_pct_median']:.0f} %, up to {cloud['other_cpu_pct_max']:.0f} %). "
                  f"Goals: {'all met' if goals_['all_met'] else 'NOT all met'}. Whole run: {results['seconds']:.0f} s.")


if __name__ == "__main__":
    main()
