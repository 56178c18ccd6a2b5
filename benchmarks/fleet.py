"""The gateway's balancing policies on a 4-replica fleet: round-robin, least-loaded, P2C and P2C + prefix affinity.

    python -m benchmarks.fleet [--json] [--quick] [--requests N] [--load F] [--seed N]
                               [--conversations N] [--turns N] [--slow-requests N] [--plot PATH]

Fleet: 4 replicas (``tandem cloud serve``, each its own process) running the *load simulator* engine
(``cloud_service.engines.simulator``: batching, chunked prefill, KV reservation, a per-replica prefix cache
and filler text; no model runs, so a 2-core machine can host a fleet) behind one gateway (``tandem cloud
gateway``, its own process, restarted for each policy), all on loopback with API keys; a fifth replica at
half speed stands in for the last one in the slow-replica scenario. The client here reads streams with the
raw gRPC stub. Every scenario's prompts are new text, so none finds another's prefixes in a cache.
Admission control is set out of the way (``GATEWAY``): the policies alone decide.

Two replica profiles (each a fleet of its own, started in turn):

- **GPU-like** (``GPU_REPLICA``, the headline): a 7-8B model (Llama-3-8B: 32 layers, 8 KV heads of 128) in
  16-bit weights on one 24 GB GPU (A10G / L4 class, ~600 GB/s, ~65 TFLOP/s fp16 achieved) under vLLM.
  Decode is memory-bound, so a step costs about the time to read the 16 GB of weights: 30 ms, plus 0.3 ms
  per sequence (its attention over its KV and its share of the matmuls): *nearly flat in batch size*.
  Prefill is compute-bound: 2 x 8e9 FLOP per token at ~65 TFLOP/s = 0.25 ms per prompt token, 2048 prompt
  tokens per step at most (vLLM's chunked-prefill budget on such cards). KV cache: 24 GB x 0.9
  (gpu_memory_utilization) - 16 GB weights - ~1.5 GB activations and CUDA graphs = ~4 GB, at 128 KiB per
  token (2 x 32 layers x 8 heads x 128 x 2 bytes) = 32,768 tokens. 256 sequences at most (vLLM's
  max_num_seqs), which the KV cache never lets it reach here; context 8192. The simulator reserves a
  sequence's prompt + max_tokens at admission and runs the queue first come, first served, so a long
  prompt waiting for KV room holds up the queue behind it (vLLM allocates as it decodes and preempts instead,
  so it packs a little more; the simulator is the conservative side).
- **compute-bound** (``CPU_REPLICA``, this benchmark's first profile, kept as an extra scenario): a batch of
  up to 16; a step takes 10 ms + 1 ms per decoding sequence + 50 us per prefilled prompt token (4096 per
  step at most); 262,144 KV tokens (never binding). A step that grows with the batch makes a replica a
  processor-sharing server: at 80 % load it runs ~9 of 16 slots and queueing is rare, so the e2e p99 is the
  service time of the longest answers and no balancer can move it much. The shared-prefix and slow-replica
  scenarios run on this fleet, at the rates they were first measured at: on the GPU-like profile the
  chats' uncached prefill alone (~2,400 tokens a turn at 0.25 ms) would exceed its capacity without affinity,
  which would measure an overload rather than the cache.

Workloads (seeded; open-loop Poisson arrivals, so a slow fleet does not slow the arrivals down):

- **heterogeneous**: prompt and output lengths each log-uniform over a 100x range (40-4000 and 4-400 tokens;
  means 860 and 86), at ``--load`` (default 0.8) of the fleet's capacity. The capacity is computed from the
  profile's cost model under each of its limits, and the lowest binds (``capacity``; per replica, with P, O
  a request's prompt and output tokens, s0 + s1 x n + p x prefilled the step time, C the prefill chunk):
  *batch*: 1 / (E[O] x (s0 + s1 x max_running) / max_running + E[P] x p), every step at a full batch;
  *KV cache*: each request adds c = s1 x E[O] + p x E[P] of step time, so at rate r a step lasts
  s0 / (1 - r x c); a request holds P + O KV tokens for about O + P / C steps, and by Little's law the cache
  fills at r x step x E[(P + O)(O + P / C)] = KV tokens, so r = KV / (s0 x E[(P + O)(O + P / C)] + KV x c).
  The GPU-like profile is KV-bound (12.3 req/s for the fleet against 16.0 for its batch); the compute-bound
  one batch-bound (21.9 against 30.2). Latencies are measured from each request's scheduled arrival: TTFT
  (first chunk) and e2e (last chunk). Every policy gets the same arrivals.
- **shared prefix**: multi-turn chats. Each conversation has its own long context (a system prompt plus a
  document, 1500-3000 tokens) and ``--turns`` turns of 20-60 new tokens, each sent once the previous answer
  (16-64 tokens) arrived plus a think time (exponential, mean 0.5 s), its history holding the answers as
  received. Conversations start as a Poisson process. Run under P2C and under P2C + affinity (same seed).
- **one slow replica**: the heterogeneous workload at ``--load`` of a fleet whose last replica runs at half
  speed (3.5 replicas' capacity), under round-robin and P2C: what load-blind routing costs when replicas
  differ (an older GPU, a noisy neighbour).

The **no-queueing floor** (``floor``) is each request's latency had it run alone on an idle replica (its
prefill chunks, then one-sequence decode steps; from the cost model, not measured), as percentiles: no
balancer can beat it, and the gap between it and round-robin is all that balancing could ever win.

Reported (``--json`` prints one object): per policy ``ttft_p50_ms``, ``ttft_p99_ms``, ``e2e_p50_ms``,
``e2e_p99_ms``, ``throughput_tps`` (completion tokens / (first arrival -> last token)) and ``errors``, under
``policies`` (GPU-like) and ``compute_bound.policies``; ``p2c_vs_rr_p99_ratio`` = P2C e2e p99 / round-robin
e2e p99 on the GPU-like fleet and ``compute_bound_p2c_vs_rr_p99_ratio``; ``floor`` and ``compute_bound.floor``;
each profile's ``capacity`` (every limit's rate and which binds); for the shared-prefix workload the same
figures under ``prefix``, ``prefix_ttft_p50_gain`` = P2C TTFT p50 / P2C+affinity TTFT p50 and
``prefix_ttft_p99_ms`` with and without affinity; ``slow_replica`` and ``slow_replica_p2c_vs_rr_p99_ratio``.
Goals (fleet issue): ``p2c_vs_rr_p99_ratio <= 0.5``; ``prefix_ttft_p50_gain >= 2`` with the affinity TTFT p99
no higher than P2C's. A latency-percentile plot (PNG) goes to ``--plot``. ``--quick`` is a smoke run
(in-process servers, a few short requests, every time ``QUICK_SPEEDUP`` x faster, seconds; figures
meaningless); it runs the same fleet in process as a ``tandem.fleet.LocalFleet`` of simulator replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from cloud_service.channel import bearer_metadata
from cloud_service.engines.simulator import count_tokens, render
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc
from edge_runtime import GenerationRequest, Message

REPLICAS = 4
POLICIES = ("round_robin", "least_loaded", "p2c", "p2c_affinity")
PREFIX_POLICIES = ("p2c", "p2c_affinity")
SLOW_POLICIES = ("round_robin", "p2c")
SLOW_SPEED = 0.5
"""The slow-replica scenario's odd replica runs at this fraction of the others' speed."""
MODEL = "sim"
CALLER_KEY, GATEWAY_KEY = "tdm_fleet_bench_caller", "tdm_fleet_bench_gateway"
GPU_REPLICA = {"max_running": 256, "decode_step_s": 0.030, "decode_s_per_sequence": 0.0003,
               "prefill_s_per_token": 0.00025, "prefill_chunk_tokens": 2048, "kv_capacity_tokens": 32_768,
               "prefix_cache_tokens": 32_768, "context_length": 8192}
"""A 7-8B model in 16-bit weights on one 24 GB GPU (A10G/L4 class) under vLLM; see the module docstring."""
CPU_REPLICA = {"max_running": 16, "decode_step_s": 0.010, "decode_s_per_sequence": 0.001,
               "prefill_s_per_token": 0.00005, "prefill_chunk_tokens": 4096, "kv_capacity_tokens": 262_144,
               "prefix_cache_tokens": 131_072, "context_length": 16_384}
"""The compute-bound profile (the first version of this benchmark): step time grows with the batch."""
QUICK_SPEEDUP = 5
"""``--quick`` runs every time in a profile's cost model this many times faster."""
PROFILES = {"gpu": GPU_REPLICA, "compute_bound": CPU_REPLICA}


@dataclass(frozen=True)
class Workload:
    prompt_tokens: tuple[int, int] = (40, 4000)
    output_tokens: tuple[int, int] = (4, 400)
    context_tokens: tuple[int, int] = (1500, 3000)
    """Shared-prefix chats: each conversation's system prompt + document."""
    turn_tokens: tuple[int, int] = (20, 60)
    answer_tokens: tuple[int, int] = (16, 64)
    think_s: float = 0.5


FULL = Workload()
QUICK = Workload(output_tokens=(2, 40), answer_tokens=(4, 8), think_s=0.02)
CHARS_PER_TOKEN = 4  # the simulator's count
GATEWAY = {"load_refresh_s": 0.1, "health_interval_s": 1.0, "replica_queue_limit": 100_000, "max_queue": 100_000}
"""Admission control off (limits far above the load): the policies alone decide."""
REPLICA_LIMITS = {"max_prompt_tokens": 16384, "max_tokens": 4096}
UNMETERED = {"requests_per_minute": 100_000_000, "tokens_per_minute": 100_000_000_000}
"""Every tenant's quota: never the bottleneck."""
DRAIN_TIMEOUT_S = 5
PERCENTILES = (50, 75, 90, 95, 99, 99.9)
GOALS = {"p2c_vs_rr_p99_ratio_max": 0.5, "prefix_ttft_p50_gain_min": 2.0}
STARTUP_TIMEOUT_S = 60
DEFAULT_PLOT = Path("benchmarks/results/fleet_latency.png")


# -- workloads -----------------------------------------------------------------------------------------------


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def _text(tag: str, tokens: int) -> str:
    """About ``tokens`` simulator tokens of text starting with ``tag`` (so no two texts share a prefix block)."""
    body = f"{tag} " + "lorem ipsum dolor sit amet " * (tokens * CHARS_PER_TOKEN // 27 + 1)
    return body[: tokens * CHARS_PER_TOKEN]


@dataclass(frozen=True)
class Arrival:
    at: float
    prompt_tokens: int
    output_tokens: int


def heterogeneous(workload: Workload, count: int, rate: float, seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    at, arrivals = 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        arrivals.append(Arrival(at, _log_uniform(rng, *workload.prompt_tokens),
                                _log_uniform(rng, *workload.output_tokens)))
    return arrivals


def _log_uniform_moments(low: int, high: int) -> tuple[float, float]:
    """E[X] and E[X^2] of a length drawn log-uniformly from [low, high]."""
    span = math.log(high / low)
    return (high - low) / span, (high * high - low * low) / (2 * span)


def capacity(workload: Workload, replica: dict[str, Any]) -> dict[str, Any]:
    """Requests per second the fleet finishes under each limit of the replica's cost model (heterogeneous
    workload); the lowest binds (see the module docstring for the derivation)."""
    prompt, prompt_sq = _log_uniform_moments(*workload.prompt_tokens)
    output, output_sq = _log_uniform_moments(*workload.output_tokens)
    s0, s1, p = replica["decode_step_s"], replica["decode_s_per_sequence"], replica["prefill_s_per_token"]
    batch, chunk = replica["max_running"], replica["prefill_chunk_tokens"]
    batch_bound = 1 / (output * (s0 + s1 * batch) / batch + prompt * p)
    step_time_per_request = s1 * output + p * prompt
    kv_token_steps = prompt_sq / chunk + prompt * output * (1 + 1 / chunk) + output_sq  # E[(P + O)(O + P/chunk)]
    kv_bound = replica["kv_capacity_tokens"] / (s0 * kv_token_steps
                                                 + replica["kv_capacity_tokens"] * step_time_per_request)
    bounds = {"batch": REPLICAS * batch_bound, "kv_cache": REPLICAS * kv_bound}
    binding = min(bounds, key=bounds.__getitem__)
    return {"rps": bounds[binding], "binding": binding, "bounds_rps": bounds}


def alone(prompt_tokens: int, output_tokens: int, replica: dict[str, Any]) -> tuple[float, float]:
    """(TTFT, e2e) in seconds of one request on an idle replica: its prefill chunks, then one-sequence steps."""
    ttft, left = 0.0, prompt_tokens
    while left > 0:
        take = min(replica["prefill_chunk_tokens"], left)
        ttft += replica["decode_step_s"] + replica["prefill_s_per_token"] * take
        left -= take
    return ttft, ttft + (output_tokens - 1) * (replica["decode_step_s"] + replica["decode_s_per_sequence"])


def floor(arrivals: Sequence[Arrival], replica: dict[str, Any]) -> dict[str, Any]:
    """The no-queueing floor: percentiles of each request's latency had it run alone on an idle replica (what
    no balancer can beat: it would need a replica per request)."""
    times = [alone(count_tokens(render(GenerationRequest(messages=[Message("user", _text("x", a.prompt_tokens))]))),
                   a.output_tokens, replica) for a in arrivals]
    ttft, e2e = [t for t, _ in times], [e for _, e in times]
    return {"ttft_p50_ms": percentile(ttft, 50) * 1000, "ttft_p99_ms": percentile(ttft, 99) * 1000,
            "e2e_p50_ms": percentile(e2e, 50) * 1000, "e2e_p99_ms": percentile(e2e, 99) * 1000,
            "e2e_percentiles_ms": {str(q): percentile(e2e, q) * 1000 for q in PERCENTILES}}


@dataclass(frozen=True)
class Conversation:
    start: float
    context_tokens: int
    turns: tuple[tuple[int, int, float], ...]
    """(new user tokens, answer tokens, think time before the turn) per turn."""


def conversations(workload: Workload, count: int, turns: int, rate: float, seed: int) -> list[Conversation]:
    rng = random.Random(seed)
    at, out = 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        out.append(Conversation(at, rng.randint(*workload.context_tokens), tuple(
            (rng.randint(*workload.turn_tokens), rng.randint(*workload.answer_tokens),
             rng.expovariate(1 / workload.think_s) if t else 0.0)
            for t in range(turns))))
    return out


# -- measuring -----------------------------------------------------------------------------------------------


@dataclass
class Sample:
    ttft_s: float | None = None
    e2e_s: float | None = None
    tokens: int = 0
    text: str = ""
    error: str | None = None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


def _chat(messages: Sequence[tuple[str, str]], tokens: int, request_id: str) -> pb.GenerateRequest:
    wire = pb.GenerateRequest(request_id=request_id, model=MODEL,
                              sampling=pb.SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0.0))
    wire.chat.messages.extend(pb.ChatMessage(role=role, content=content) for role, content in messages)
    return wire


async def _call(stub: inference_pb2_grpc.InferenceStub, wire: pb.GenerateRequest, since: float,
                keep_text: bool = False) -> Sample:
    """One stream; latencies counted from ``since`` (the scheduled arrival)."""
    sample = Sample()
    parts: list[str] = []
    try:
        call = stub.Generate(wire, metadata=bearer_metadata(CALLER_KEY), timeout=600)
        async for chunk in call:
            if sample.ttft_s is None:
                sample.ttft_s = time.perf_counter() - since
            sample.tokens += len(chunk.token_ids)
            if keep_text:
                parts.append(chunk.text)
        sample.e2e_s = time.perf_counter() - since
    except grpc.aio.AioRpcError as exc:
        sample.error = exc.code().name
    sample.text = "".join(parts)
    return sample


async def _at(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_heterogeneous(target: str, arrivals: list[Arrival], tag: str) -> Run:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        run = Run(started=time.perf_counter())

        async def one(index: int, arrival: Arrival) -> Sample:
            due = run.started + arrival.at
            await _at(due)
            wire = _chat([("user", _text(f"{tag}-{index}", arrival.prompt_tokens))], arrival.output_tokens,
                         f"{tag}-{index}")
            return await _call(stub, wire, due)

        run.samples = list(await asyncio.gather(*(one(i, a) for i, a in enumerate(arrivals))))
        run.ended = time.perf_counter()
        return run


async def run_conversations(target: str, chats: list[Conversation], tag: str) -> Run:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        run = Run(started=time.perf_counter())

        async def converse(index: int, chat: Conversation) -> list[Sample]:
            await _at(run.started + chat.start)
            history = [("system", _text(f"{tag}-{index} You are a helpful assistant. Document:",
                                        chat.context_tokens))]
            samples = []
            for turn, (user_tokens, answer_tokens, think_s) in enumerate(chat.turns):
                await asyncio.sleep(think_s)
                history.append(("user", _text(f"question {turn}:", user_tokens)))
                due = time.perf_counter()
                sample = await _call(stub, _chat(history, answer_tokens, f"{tag}-{index}-{turn}"), due,
                                     keep_text=True)
                samples.append(sample)
                if sample.error:
                    break
                history.append(("assistant", sample.text))
            return samples

        done = await asyncio.gather(*(converse(i, c) for i, c in enumerate(chats)))
        run.samples = [s for samples in done for s in samples]
        run.ended = time.perf_counter()
        return run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summarize(run: Run) -> dict[str, Any]:
    ok = [s for s in run.samples if s.error is None]
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    e2e = [s.e2e_s for s in ok if s.e2e_s is not None]
    return {
        "requests": len(run.samples), "errors": len(run.samples) - len(ok),
        "ttft_p50_ms": percentile(ttft, 50) * 1000, "ttft_p99_ms": percentile(ttft, 99) * 1000,
        "e2e_p50_ms": percentile(e2e, 50) * 1000, "e2e_p99_ms": percentile(e2e, 99) * 1000,
        "throughput_tps": sum(s.tokens for s in ok) / max(1e-9, run.ended - run.started),
        "ttft_percentiles_ms": {str(q): percentile(ttft, q) * 1000 for q in PERCENTILES},
        "e2e_percentiles_ms": {str(q): percentile(e2e, q) * 1000 for q in PERCENTILES},
    }


# -- the fleet -----------------------------------------------------------------------------------------------


def _table(values: dict[str, Any]) -> str:
    return "".join(f"{k} = {v!r}\n" for k, v in values.items())


def _replica_toml(replica: dict[str, Any]) -> str:
    return (
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndrain_timeout_s = {DRAIN_TIMEOUT_S}\n'
        f"[limits]\n{_table(REPLICA_LIMITS)}"
        f'[[models]]\nname = "{MODEL}"\nengine = "simulator"\nversion = "v1"\n[models.simulator]\n{_table(replica)}'
        f'[[tenants]]\nname = "gateway"\nkey_sha256 = "{hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()}"\n'
        f"{_table(UNMETERED)}"
    )


def _gateway_toml(addresses: Sequence[str], policy: str) -> str:
    return (
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndrain_timeout_s = {DRAIN_TIMEOUT_S}\n'
        f'[[tenants]]\nname = "bench"\nkey_sha256 = "{hashlib.sha256(CALLER_KEY.encode()).hexdigest()}"\n'
        f"{_table(UNMETERED)}"
        f'[gateway]\nreplicas = {json.dumps(list(addresses))}\npolicy = "{policy}"\n'
        f'replica_api_key = "{GATEWAY_KEY}"\n{_table(GATEWAY)}'
    )


async def _spawn(args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``tandem cloud ...`` with its log in a file; wait for its "serving" line; return its port."""
    handle = log.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "tandem", "cloud", *args], stderr=handle,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    handle.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"message": "serving"' in line:
                return process, int(json.loads(line)["port"])
        if process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError(f"`tandem cloud {args[0]}` did not start; its log: {log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _scaled(replica: dict[str, Any], speed: float) -> dict[str, Any]:
    """The same replica at ``speed`` times its speed (every time in its cost model divided by it)."""
    return replica | {k: replica[k] / speed for k in ("decode_step_s", "decode_s_per_sequence", "prefill_s_per_token")}


def _members(slow: bool) -> list[int]:
    """The replicas a gateway routes to: the regular ones, the last swapped for the slow one when ``slow``."""
    return [*range(REPLICAS - 1), REPLICAS if slow else REPLICAS - 1]


class ProcessFleet:
    """Replicas and the gateway as `tandem cloud` processes (the full run): ``REPLICAS`` replicas plus one at
    half speed, which only the slow-replica scenario's gateway routes to (instead of the last regular one)."""

    def __init__(self, work: Path, replica: dict[str, Any]) -> None:
        self.work, self.replica = work, replica
        self.replicas: list[subprocess.Popen[bytes]] = []
        self.addresses: list[str] = []

    async def start(self) -> None:
        configs = []
        for name, options in (("replica", self.replica), ("slow-replica", _scaled(self.replica, SLOW_SPEED))):
            configs.append(self.work / f"{name}.toml")
            configs[-1].write_text(_replica_toml(options))
        started = await asyncio.gather(*(
            _spawn(["serve", "-c", str(configs[i == REPLICAS])], self.work / f"replica-{i}.log")
            for i in range(REPLICAS + 1)))
        self.replicas = [process for process, _ in started]
        self.addresses = [f"127.0.0.1:{port}" for _, port in started]

    def members(self, slow: bool) -> list[str]:
        return [self.addresses[index] for index in _members(slow)]

    @contextlib.asynccontextmanager
    async def gateway(self, policy: str, *, slow: bool = False) -> AsyncIterator[str]:
        config = self.work / f"gateway-{policy}.toml"
        config.write_text(_gateway_toml(self.members(slow), policy))
        process, port = await _spawn(["gateway", "-c", str(config)], self.work / f"gateway-{policy}-{slow}.log")
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await asyncio.to_thread(_stop, process)

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(_stop, p) for p in self.replicas))


class InProcessFleet(ProcessFleet):
    """The same fleet in this process, as a ``tandem.fleet.LocalFleet`` of simulator replicas (``--quick``:
    starts in milliseconds; timings share one loop), set up as the TOML files above set up the processes."""

    fleet: Any

    async def start(self) -> None:
        from cloud_service.config import Limits
        from tandem.fleet import FleetSettings, LocalFleet, simulator_model

        profiles = [self.replica] * REPLICAS + [_scaled(self.replica, SLOW_SPEED)]
        self.fleet = LocalFleet(
            model=MODEL, api_key=CALLER_KEY, tenant="bench", replicas=len(profiles), **UNMETERED,
            engines=lambda index: simulator_model(model=MODEL, version="v1", options=profiles[index]),
            settings=FleetSettings(gateway=GATEWAY, replica_limits=Limits(**REPLICA_LIMITS), replica_key=GATEWAY_KEY,
                                   drain_timeout_s=DRAIN_TIMEOUT_S),
        )
        self.addresses = await self.fleet.start_replicas()

    @contextlib.asynccontextmanager
    async def gateway(self, policy: str, *, slow: bool = False) -> AsyncIterator[str]:
        target = await self.fleet.start_gateway({"policy": policy}, replicas=_members(slow))
        try:
            yield target
        finally:
            await self.fleet.gateway.drain(DRAIN_TIMEOUT_S)
            await self.fleet.stop_gateway(0.1)

    async def stop(self) -> None:
        await self.fleet.close()


# -- the plot ------------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    """Latency percentiles per policy, with the no-queueing floor dashed, as a PNG: e2e and TTFT of the
    heterogeneous workload on each profile, TTFT of the shared-prefix chats, e2e with one slow replica."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(17, 8.5))
    gpu, compute = result, result["compute_bound"]
    panels = [
        (axes[0][0], gpu["policies"], gpu["floor"], "e2e_percentiles_ms", "GPU-like, heterogeneous: end-to-end"),
        (axes[0][1], gpu["policies"], None, "ttft_percentiles_ms", "GPU-like, heterogeneous: time to first token"),
        (axes[0][2], compute["policies"], compute["floor"], "e2e_percentiles_ms",
         "compute-bound, heterogeneous: end-to-end"),
        (axes[1][0], compute["policies"], None, "ttft_percentiles_ms",
         "compute-bound, heterogeneous: time to first token"),
        (axes[1][1], result["prefix"], None, "ttft_percentiles_ms", "compute-bound, shared-prefix chats: TTFT"),
        (axes[1][2], result["slow_replica"], compute["slow_floor"], "e2e_percentiles_ms",
         "compute-bound, one replica at half speed: e2e"),
    ]
    positions = range(len(PERCENTILES))
    for axis, rows, floor_row, key, title in panels:
        for name, row in rows.items():
            axis.plot(positions, [row[key][str(q)] for q in PERCENTILES], marker="o", label=name)
        if floor_row is not None:
            axis.plot(positions, [floor_row[key][str(q)] for q in PERCENTILES], linestyle="--", color="black",
                      label="alone on an idle replica")
        axis.set_xticks(list(positions), [f"p{q:g}" for q in PERCENTILES])
        axis.set_yscale("log")
        axis.set_ylabel("ms")
        axis.set_title(title, fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"gateway policies, {REPLICAS} simulated replicas at {result['workload']['load']:.0%} of "
                    "capacity (benchmarks/fleet.py)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    figure.savefig(partial, format="png", dpi=110)
    plt.close(figure)
    os.replace(partial, path)


# -- main ----------------------------------------------------------------------------------------------------


async def measure(options: argparse.Namespace, log: Any) -> dict[str, Any]:
    workload = QUICK if options.quick else FULL
    profiles = {name: _scaled(replica, QUICK_SPEEDUP) if options.quick else replica
                for name, replica in PROFILES.items()}

    def report(name: str, row: dict[str, Any]) -> None:
        log(f"{name:>34}: TTFT p50 {row['ttft_p50_ms']:.0f} ms, p99 {row['ttft_p99_ms']:.0f} ms; e2e p99 "
            f"{row['e2e_p99_ms']:.0f} ms; {row['throughput_tps']:.0f} tok/s; {row['errors']} errors")

    async def heterogeneous_runs(fleet: ProcessFleet, profile: str, arrivals: list[Arrival]) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for policy in POLICIES:
            async with fleet.gateway(policy) as target:
                rows[policy] = summarize(await run_heterogeneous(target, arrivals, f"het-{profile}-{policy}"))
            report(f"{profile}, {policy}", rows[policy])
        return rows

    scenarios: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-fleet-") as work:
        for profile, replica in profiles.items():
            limits = capacity(workload, replica)
            rate = options.load * limits["rps"]
            arrivals = heterogeneous(workload, options.requests, rate, options.seed)
            scenario: dict[str, Any] = {"replica": replica, "capacity": limits, "rate_rps": rate,
                                        "floor": floor(arrivals, replica)}
            folder = Path(work) / profile
            folder.mkdir()
            fleet = (InProcessFleet if options.quick else ProcessFleet)(folder, replica)
            await fleet.start()
            try:
                scenario["policies"] = await heterogeneous_runs(fleet, profile, arrivals)
                if profile == "compute_bound":  # the chats and the slow replica: see the module docstring
                    await extra_scenarios(fleet, options, workload, rate, scenario, report)
            finally:
                await fleet.stop()
            scenario["p2c_vs_rr_p99_ratio"] = (scenario["policies"]["p2c"]["e2e_p99_ms"]
                                               / scenario["policies"]["round_robin"]["e2e_p99_ms"])
            scenarios[profile] = scenario
    gpu, compute = scenarios["gpu"], scenarios["compute_bound"]
    prefix, slow = compute.pop("prefix"), compute.pop("slow_replica")
    ratio = gpu["p2c_vs_rr_p99_ratio"]
    gain = prefix["p2c"]["ttft_p50_ms"] / prefix["p2c_affinity"]["ttft_p50_ms"]
    p99 = {"p2c": prefix["p2c"]["ttft_p99_ms"], "p2c_affinity": prefix["p2c_affinity"]["ttft_p99_ms"]}
    return {
        "fleet": {"replicas": REPLICAS, "replica": gpu["replica"], "gateway": GATEWAY, "processes": not options.quick},
        "workload": {"requests": options.requests, "load": options.load, "capacity_rps": gpu["capacity"]["rps"],
                     "capacity": gpu["capacity"], "rate_rps": gpu["rate_rps"], **dataclasses.asdict(workload),
                     "conversations": options.conversations, "turns": options.turns,
                     "slow_requests": options.slow_requests, "slow_rate_rps": compute.pop("slow_rate_rps"),
                     "seed": options.seed},
        "policies": gpu["policies"],
        "floor": gpu["floor"],
        "p2c_vs_rr_p99_ratio": ratio,
        "compute_bound": compute,
        "compute_bound_p2c_vs_rr_p99_ratio": compute["p2c_vs_rr_p99_ratio"],
        "prefix": prefix,
        "prefix_ttft_p50_gain": gain,
        "prefix_ttft_p99_ms": p99,
        "slow_replica": slow,
        "slow_replica_p2c_vs_rr_p99_ratio": slow["p2c"]["e2e_p99_ms"] / slow["round_robin"]["e2e_p99_ms"],
        "goals": GOALS | {"met": {
            "p2c_vs_rr_p99_ratio": ratio <= GOALS["p2c_vs_rr_p99_ratio_max"],
            "prefix_ttft_p50_gain": gain >= GOALS["prefix_ttft_p50_gain_min"] and p99["p2c_affinity"] <= p99["p2c"],
        }},
    }


async def extra_scenarios(fleet: ProcessFleet, options: argparse.Namespace, workload: Workload, rate: float,
                          scenario: dict[str, Any], report: Any) -> None:
    """The shared-prefix chats and the slow-replica scenario (on the compute-bound fleet), into ``scenario``."""
    replica = scenario["replica"]
    chat_rate = options.conversations / (options.requests / rate)  # conversations start over a similar span
    chats = conversations(workload, options.conversations, options.turns, chat_rate, options.seed)
    slow_rate = rate * (REPLICAS - 1 + SLOW_SPEED) / REPLICAS
    slow_arrivals = heterogeneous(workload, options.slow_requests, slow_rate, options.seed + 1)
    prefix: dict[str, Any] = {}
    for policy in PREFIX_POLICIES:
        async with fleet.gateway(policy) as target:
            prefix[policy] = summarize(await run_conversations(target, chats, f"chat-{policy}"))
        report(f"chats, {policy}", prefix[policy])
    slow: dict[str, Any] = {}
    for policy in SLOW_POLICIES:
        async with fleet.gateway(policy, slow=True) as target:
            slow[policy] = summarize(await run_heterogeneous(target, slow_arrivals, f"slow-{policy}"))
        report(f"one slow replica, {policy}", slow[policy])
    # the floor of a request is on a full-speed replica: the best place any balancer could have sent it
    scenario.update(prefix=prefix, slow_replica=slow, slow_rate_rps=slow_rate,
                    slow_floor=floor(slow_arrivals, replica))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true", help="a smoke run: in-process fleet, few requests")
    parser.add_argument("--requests", type=int, default=None, help="heterogeneous requests per policy [500]")
    parser.add_argument("--load", type=float, default=0.8, help="arrival rate as a fraction of fleet capacity")
    parser.add_argument("--conversations", type=int, default=None, help="shared-prefix conversations [100]")
    parser.add_argument("--turns", type=int, default=None, help="turns per conversation [5]")
    parser.add_argument("--slow-requests", type=int, default=None, help="requests of the slow-replica scenario [300]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="where the PNG goes")
    options = parser.parse_args()
    quick = {"requests": 40, "conversations": 6, "turns": 2, "slow_requests": 20}
    full = {"requests": 500, "conversations": 100, "turns": 5, "slow_requests": 300}
    for name, value in (quick if options.quick else full).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    console = Console(stderr=True)
    result = asyncio.run(measure(options, console.print))
    plot(result, options.plot)
    result["plot"] = str(options.plot)
    if options.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{REPLICAS} simulated replicas, heterogeneous load at {options.load:.0%} of capacity")
    for column in ("scenario, policy", "TTFT p50", "TTFT p99", "e2e p50", "e2e p99", "tok/s", "errors"):
        table.add_column(column, justify="right", no_wrap=True)
    compute = result["compute_bound"]
    rows = [*((f"GPU-like, {k}", v) for k, v in result["policies"].items()),
            ("GPU-like, alone (floor)", result["floor"]),
            *((f"compute-bound, {k}", v) for k, v in compute["policies"].items()),
            ("compute-bound, alone (floor)", compute["floor"]),
            *((f"chats, {k}", v) for k, v in result["prefix"].items()),
            *((f"1 slow, {k}", v) for k, v in result["slow_replica"].items())]
    for name, row in rows:
        table.add_row(name, f"{row['ttft_p50_ms']:.0f} ms", f"{row['ttft_p99_ms']:.0f} ms",
                      f"{row['e2e_p50_ms']:.0f} ms", f"{row['e2e_p99_ms']:.0f} ms",
                      f"{row['throughput_tps']:.0f}" if "throughput_tps" in row else "",
                      str(row.get("errors", "")))
    console = Console(width=max(Console().width, 110))
    console.print(table)
    p99 = result["prefix_ttft_p99_ms"]
    console.print(f"P2C / round-robin e2e p99: {result['p2c_vs_rr_p99_ratio']:.2f} GPU-like (goal <= 0.5), "
                  f"{result['compute_bound_p2c_vs_rr_p99_ratio']:.2f} compute-bound, "
                  f"{result['slow_replica_p2c_vs_rr_p99_ratio']:.2f} with one replica at half speed; prefix "
                  f"affinity TTFT p50 gain: {result['prefix_ttft_p50_gain']:.1f} x (goal >= 2), TTFT p99 "
                  f"{p99['p2c_affinity']:.0f} ms vs {p99['p2c']:.0f} ms without; plot: {result['plot']}")


if __name__ == "__main__":
    main()
