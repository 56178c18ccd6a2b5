"""The gateway's balancing policies on a fleet of simulated replicas: what the balancer wins where it can win.

    python -m benchmarks.fleet [--json] [--quick] [--requests N] [--load F] [--seed N] [--conversations N]
                               [--turns N] [--bursty-requests N] [--overload F] [--overload-s S] [--plot PATH]
                               [--only bursty]

Fleet: 4 replicas (``tandem cloud serve``, each its own process) running the *load simulator* engine
(``cloud_service.engines.simulator``: batching, chunked prefill, KV reservation, a per-replica prefix cache
and filler text; no model runs, so a 2-core machine can host a fleet) behind one gateway (``tandem cloud
gateway``, its own process, restarted for each run), all on loopback with API keys; a fifth replica at half
speed stands in for the last one in the heterogeneous scenario. The client here reads streams with the raw
gRPC stub. Every scenario's prompts are new text, so none finds another's prefixes in a cache. Admission
control is set out of the way (``GATEWAY``) except in the overload scenario: elsewhere the policies alone
decide.

Two replica profiles (each a fleet of its own, started in turn):

- **GPU-like** (``GPU_REPLICA``): a 7-8B model (Llama-3-8B: 32 layers, 8 KV heads of 128) in 16-bit weights
  on one 24 GB GPU (A10G / L4 class, ~600 GB/s, ~65 TFLOP/s fp16 achieved) under vLLM. Decode is
  memory-bound, so a step costs about the time to read the 16 GB of weights: 30 ms, plus 0.3 ms per sequence
  (its attention over its KV and its share of the matmuls): *nearly flat in batch size*. Prefill is
  compute-bound: 2 x 8e9 FLOP per token at ~65 TFLOP/s = 0.25 ms per prompt token, 2048 prompt tokens per
  step at most (vLLM's chunked-prefill budget on such cards). KV cache: 24 GB x 0.9 (gpu_memory_utilization)
  - 16 GB weights - ~1.5 GB activations and CUDA graphs = ~4 GB, at 128 KiB per token (2 x 32 layers x 8
  heads x 128 x 2 bytes) = 32,768 tokens. 256 sequences at most (vLLM's max_num_seqs), which the KV cache
  never lets it reach here; context 8192. The simulator reserves a sequence's prompt + max_tokens at
  admission and runs the queue first come, first served, so a long prompt waiting for KV room holds up the
  queue behind it (vLLM allocates as it decodes and preempts instead, so it packs a little more; the
  simulator is the conservative side). Only the equal-replica baseline runs here (see below).
- **compute-bound** (``CPU_REPLICA``): a batch of up to 16; a step takes 10 ms + 1 ms per decoding sequence
  + 50 us per prefilled prompt token (4096 per step at most); 262,144 KV tokens (never binding). A step that
  grows with the batch makes a replica a processor-sharing server. Every scenario that has a goal runs on
  this fleet: its requests are ~3x shorter than the GPU-like ones, so a run of each fits the time budget,
  and on the GPU-like profile the chats' uncached prefill alone (~2,400 tokens a turn at 0.25 ms) would
  exceed its capacity without affinity, which would measure an overload rather than the cache.

Request lengths (seeded): prompt and output tokens each log-uniform over a 100x range (40-4000 and 4-400;
means 860 and 86). The fleet's *capacity* is computed from the profile's cost model under each of its limits,
and the lowest binds (``capacity``; per replica, with P, O a request's prompt and output tokens, s0 + s1 x n
+ p x prefilled the step time, C the prefill chunk): *batch*: 1 / (E[O] x (s0 + s1 x max_running) /
max_running + E[P] x p), every step at a full batch; *KV cache*: each request adds c = s1 x E[O] + p x E[P]
of step time, so at rate r a step lasts s0 / (1 - r x c); a request holds P + O KV tokens for about O + P / C
steps, and by Little's law the cache fills at r x step x E[(P + O)(O + P / C)] = KV tokens, so r = KV / (s0 x
E[(P + O)(O + P / C)] + KV x c). The GPU-like profile is KV-bound (12.3 req/s for the fleet against 16.0 for
its batch); the compute-bound one batch-bound (21.9 against 30.2). Arrivals are open-loop (a slow fleet does
not slow them down); latencies are measured from each request's scheduled arrival: TTFT (first chunk) and e2e
(last chunk). Every policy of a scenario gets the same arrivals.

Scenarios:

- **equal replicas** (both profiles; round-robin and P2C): Poisson arrivals at ``--load`` (default 0.8) of the
  fleet's capacity, with the **no-queueing floor** (``floor``): each request's latency had it run alone on an
  idle replica (its prefill chunks, then one-sequence decode steps; from the cost model, not measured), as
  percentiles. No balancer can beat it, and the gap between it and round-robin is all that balancing could
  ever win. On equal replicas that gap is small (round-robin's e2e p99 is under 3x the floor: at 80 % load a
  replica mostly shares its steps among requests rather than queueing them), which is why the first goal of
  this benchmark, P2C e2e p99 <= 0.5 x round-robin here, was unsound; the ratio stays reported
  (``p2c_vs_rr_p99_ratio``, ``rr_vs_floor_p99_ratio``), without a goal.
- **heterogeneous and bursty** (the headline; round-robin, random, least-loaded, P2C): the compute-bound fleet
  with its last replica at half speed (``SLOW_SPEED``: an older GPU, a noisy neighbour), so 3.5 replicas'
  capacity, at ``--load`` of that, with *bursty* arrivals (``Bursts``: a two-state Markov-modulated Poisson
  process, seeded: bursts at 2x the mean rate, mean 2 s long, calms at 0.5x, mean 4 s; each length
  exponential, so a third of the time the fleet is offered 160 % of its capacity). A load-blind policy sends
  the slow replica a quarter of the traffic, 1.4x what it can finish, and lets bursts pile onto whichever
  replica is next; a load-aware one drains them where there is room. Goals: P2C e2e p99 <= 0.6 x round-robin's
  and <= 0.5 x random's (``bursty_p2c_vs_rr_p99_ratio``, ``bursty_p2c_vs_random_p99_ratio``; least-loaded's
  ratios are reported too). The floor is on a full-speed replica.
- **overload** (P2C): Poisson arrivals at ``--overload`` (default 1.2) x the compute-bound fleet's capacity for
  ``--overload-s`` seconds (default 25), each caller waiting at most ``OVERLOAD_DEADLINE_S``, through a gateway
  with admission control on (``OVERLOAD_GATEWAY``: a replica running a full batch with 2 waiting is
  saturated; while every replica is, up to 16 requests wait at the gateway for at most 2 s). The gateway must
  shed the excess at admission, RESOURCE_EXHAUSTED with ``retry-after-ms`` trailing metadata, rather than
  queue it until callers time out. Reported: the shed share (the fleet can finish 1 / 1.2, so about 17 % must
  go), why each shed happened, the retry-after it carried, the admitted requests' latencies. Goals: the
  admitted e2e p99 within 2x P2C's at ``--load`` on equal replicas (``overload_p99_vs_load_ratio``), no
  admitted stream failing (``overload_admitted_failed``: any error but a shed before the first token, a
  caller's deadline included), every shed carrying retry-after-ms.
- **shared prefix** (P2C and P2C + affinity): multi-turn chats. Each conversation has its own long context (a
  system prompt plus a document, 1500-3000 tokens) and ``--turns`` turns of 20-60 new tokens, each sent once
  the previous answer (16-64 tokens) arrived plus a think time (exponential, mean 0.5 s), its history holding
  the answers as received. Conversations start as a Poisson process. The affinity key is the conversation's
  whole prefix (``cloud_service.gateway.balancing``: a hash chain over the prompt), so a turn follows its own
  history. Reported: TTFT and the prefix cache's hit ratio (prompt tokens the replica found cached / prompt
  tokens). Goal: ``prefix_ttft_p50_gain`` = P2C TTFT p50 / P2C+affinity TTFT p50 >= 2, with the affinity TTFT
  p99 no higher than P2C's.

Reported (``--json`` prints one object): per run ``ttft_p50_ms``, ``ttft_p99_ms``, ``e2e_p50_ms``,
``e2e_p99_ms``, ``throughput_tps`` (completion tokens / (first arrival -> last token)) and ``errors``, under
``policies`` (GPU-like, equal replicas), ``compute_bound.policies``, ``bursty.policies``, ``overload`` and
``prefix``; each scenario's ``floor``, each profile's ``capacity`` (every limit's rate and which binds), the
ratios above and ``goals`` (thresholds and ``met``). Each ratio is printed with its goal. A latency-percentile
plot (PNG) goes to ``--plot``. ``--quick`` is a smoke run (in-process servers, a few short requests, every
time ``QUICK_SPEEDUP`` x faster, seconds; figures meaningless); it runs the same fleet in process as a
``tandem.fleet.LocalFleet`` of simulator replicas.
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

from cloud_service.channel import bearer_metadata, trailing_value
from cloud_service.engines.simulator import count_tokens, render
from cloud_service.errors import RETRY_AFTER_METADATA
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc
from edge_runtime import GenerationRequest, Message

REPLICAS = 4
POLICIES = ("round_robin", "p2c")
"""The equal-replica baseline's policies (both profiles)."""
BURSTY_POLICIES = ("round_robin", "random", "least_loaded", "p2c")
PREFIX_POLICIES = ("p2c", "p2c_affinity")
OVERLOAD_POLICY = "p2c"
SLOW_SPEED = 0.5
"""The heterogeneous scenario's odd replica runs at this fraction of the others' speed."""
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
"""``--quick`` runs every time in a profile's cost model (and the bursts, the overload, the deadline) this many
times faster."""
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


@dataclass(frozen=True)
class Bursts:
    """Bursty arrivals: a two-state Markov-modulated Poisson process. During a burst requests arrive at
    ``high`` x the mean rate, during a calm at ``low`` x; each state lasts an exponential time of mean
    ``burst_s`` / ``calm_s``, then the other begins; the first state is drawn by each one's share of the time.
    The factors and lengths must keep the long-run rate the mean rate: high x burst_s + low x calm_s =
    burst_s + calm_s."""

    high: float = 2.0
    low: float = 0.5
    burst_s: float = 2.0
    calm_s: float = 4.0

    def __post_init__(self) -> None:
        mean = (self.high * self.burst_s + self.low * self.calm_s) / (self.burst_s + self.calm_s)
        if not math.isclose(mean, 1.0, rel_tol=1e-9):
            raise ValueError(f"bursts {self} average {mean:g} x the mean rate, not 1")

    def scaled(self, speedup: float) -> Bursts:
        return dataclasses.replace(self, burst_s=self.burst_s / speedup, calm_s=self.calm_s / speedup)


FULL = Workload()
QUICK = Workload(output_tokens=(2, 40), answer_tokens=(4, 8), think_s=0.02)
BURSTS = Bursts()
CHARS_PER_TOKEN = 4  # the simulator's count
GATEWAY = {"load_refresh_s": 0.1, "health_interval_s": 1.0, "replica_queue_limit": 100_000, "max_queue": 100_000}
"""Admission control off (limits far above the load): the policies alone decide."""
OVERLOAD_GATEWAY = {"replica_queue_limit": 2, "max_queue": 16, "queue_timeout_s": 2.0}
"""Admission control on (the overload scenario): a replica running a full batch with 2 more waiting is
saturated; while all are, 16 requests (under a second of the fleet's completions) wait at the gateway, each
for at most 2 s; the rest are refused with RESOURCE_EXHAUSTED and retry-after-ms."""
OVERLOAD_DEADLINE_S = 30.0
"""How long an overload caller waits for its whole answer (3x the longest answers' e2e at 80 % load)."""
REPLICA_LIMITS = {"max_prompt_tokens": 16384, "max_tokens": 4096}
UNMETERED = {"requests_per_minute": 100_000_000, "tokens_per_minute": 100_000_000_000}
"""Every tenant's quota: never the bottleneck."""
DRAIN_TIMEOUT_S = 5
PERCENTILES = (50, 75, 90, 95, 99, 99.9)
GOALS = {"bursty_p2c_vs_rr_p99_ratio_max": 0.6, "bursty_p2c_vs_random_p99_ratio_max": 0.5,
         "overload_p99_vs_load_ratio_max": 2.0, "overload_admitted_failed_max": 0,
         "prefix_ttft_p50_gain_min": 2.0}
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
    burst: bool = False
    """Arrived during a burst (bursty arrivals only)."""


def heterogeneous(workload: Workload, count: int, rate: float, seed: int) -> list[Arrival]:
    """``count`` Poisson arrivals at ``rate`` per second."""
    rng = random.Random(seed)
    at, arrivals = 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        arrivals.append(Arrival(at, _log_uniform(rng, *workload.prompt_tokens),
                                _log_uniform(rng, *workload.output_tokens)))
    return arrivals


def bursty(workload: Workload, count: int, rate: float, seed: int, bursts: Bursts) -> list[Arrival]:
    """``count`` arrivals of the Markov-modulated Poisson process ``bursts`` around a mean ``rate`` per second."""
    rng = random.Random(seed)
    mean_s = {True: bursts.burst_s, False: bursts.calm_s}
    factor = {True: bursts.high, False: bursts.low}
    in_burst = rng.random() < bursts.burst_s / (bursts.burst_s + bursts.calm_s)
    at, switch, arrivals = 0.0, rng.expovariate(1 / mean_s[in_burst]), []
    while len(arrivals) < count:
        gap = rng.expovariate(rate * factor[in_burst])
        if at + gap > switch:  # exponential gaps are memoryless: the next state's clock starts at the switch
            at, in_burst = switch, not in_burst
            switch = at + rng.expovariate(1 / mean_s[in_burst])
            continue
        at += gap
        arrivals.append(Arrival(at, _log_uniform(rng, *workload.prompt_tokens),
                                _log_uniform(rng, *workload.output_tokens), in_burst))
    return arrivals


def for_duration(workload: Workload, duration_s: float, rate: float, seed: int) -> list[Arrival]:
    """Poisson arrivals at ``rate`` per second during ``duration_s`` seconds."""
    enough = int(rate * duration_s + 10 * math.sqrt(rate * duration_s) + 10)
    return [a for a in heterogeneous(workload, enough, rate, seed) if a.at <= duration_s]


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
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """From the last chunk's usage: the prompt and how much of it the replica found in its prefix cache."""
    error: str | None = None
    """The status code's name when the stream failed."""
    detail: str = ""
    retry_after_ms: int | None = None
    """The failure's ``retry-after-ms`` trailing metadata, when it had one."""
    turn: int = 0
    """Chats: the turn of its conversation (0 is the first)."""

    @property
    def shed(self) -> bool:
        """Refused before its first token for want of room (RESOURCE_EXHAUSTED): never admitted."""
        return self.error == "RESOURCE_EXHAUSTED" and self.ttft_s is None


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
                keep_text: bool = False, timeout_s: float = 600.0) -> Sample:
    """One stream; latencies counted from ``since`` (the scheduled arrival); the deadline from the call."""
    sample = Sample()
    parts: list[str] = []
    try:
        call = stub.Generate(wire, metadata=bearer_metadata(CALLER_KEY), timeout=timeout_s)
        async for chunk in call:
            if sample.ttft_s is None:
                sample.ttft_s = time.perf_counter() - since
            sample.tokens += len(chunk.token_ids)
            if chunk.HasField("usage"):
                sample.prompt_tokens, sample.cached_tokens = chunk.usage.prompt_tokens, chunk.usage.cached_tokens
            if keep_text:
                parts.append(chunk.text)
        sample.e2e_s = time.perf_counter() - since
    except grpc.aio.AioRpcError as exc:
        sample.error, sample.detail = exc.code().name, exc.details() or ""
        retry_after = trailing_value(exc.trailing_metadata(), RETRY_AFTER_METADATA)
        sample.retry_after_ms = int(retry_after) if retry_after is not None and retry_after.isdigit() else None
    sample.text = "".join(parts)
    return sample


async def _at(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_heterogeneous(target: str, arrivals: list[Arrival], tag: str, timeout_s: float = 600.0) -> Run:
    """Each arrival as a one-message chat at its time; ``timeout_s`` is each caller's deadline."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        run = Run(started=time.perf_counter())

        async def one(index: int, arrival: Arrival) -> Sample:
            due = run.started + arrival.at
            await _at(due)
            wire = _chat([("user", _text(f"{tag}-{index}", arrival.prompt_tokens))], arrival.output_tokens,
                         f"{tag}-{index}")
            return await _call(stub, wire, due, timeout_s=timeout_s)

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
                sample.turn = turn
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
    """Latency percentiles and throughput of the streams that completed; the others counted as errors."""
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


def summarize_chats(run: Run) -> dict[str, Any]:
    """``summarize`` plus the prefix cache's hit ratio: prompt tokens found cached / prompt tokens, over all
    turns and over the turns after each conversation's first (the only ones that can hit)."""
    ok = [s for s in run.samples if s.error is None]
    later = [s for s in ok if s.turn > 0]

    def hit_ratio(samples: list[Sample]) -> float:
        return sum(s.cached_tokens for s in samples) / max(1, sum(s.prompt_tokens for s in samples))

    return summarize(run) | {"cache_hit_ratio": hit_ratio(ok), "later_turns_cache_hit_ratio": hit_ratio(later)}


def summarize_overload(run: Run, duration_s: float) -> dict[str, Any]:
    """The overload run: ``summarize`` over the admitted requests (every one not shed), how many were shed and
    why, the retry-after the sheds carried, and the admitted streams that failed anyway, by status."""
    shed = [s for s in run.samples if s.shed]
    admitted = Run([s for s in run.samples if not s.shed], run.started, run.ended)
    failed = [s for s in admitted.samples if s.error is not None]
    retry_after = [s.retry_after_ms for s in shed if s.retry_after_ms is not None]
    reasons: dict[str, int] = {}
    for sample in shed:
        reason = ("queue full" if "max_queue" in sample.detail else
                  "queue wait" if "queue_timeout_s" in sample.detail else "other")
        reasons[reason] = reasons.get(reason, 0) + 1
    by_code: dict[str, int] = {}
    for sample in failed:
        by_code[sample.error or ""] = by_code.get(sample.error or "", 0) + 1
    completed = len(admitted.samples) - len(failed)
    return summarize(admitted) | {
        "offered": len(run.samples), "offered_rps": len(run.samples) / duration_s, "shed": len(shed),
        "shed_share": len(shed) / max(1, len(run.samples)), "shed_reasons": reasons,
        "shed_without_retry_after": len(shed) - len(retry_after),
        "retry_after_ms": {"min": min(retry_after, default=math.nan), "p50": percentile(retry_after, 50),
                           "max": max(retry_after, default=math.nan)},
        "admitted": len(admitted.samples), "admitted_failed": len(failed), "admitted_failed_by_code": by_code,
        "completed_rps": completed / max(1e-9, run.ended - run.started),
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


def _gateway_toml(addresses: Sequence[str], policy: str, settings: dict[str, Any]) -> str:
    return (
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndrain_timeout_s = {DRAIN_TIMEOUT_S}\n'
        f'[[tenants]]\nname = "bench"\nkey_sha256 = "{hashlib.sha256(CALLER_KEY.encode()).hexdigest()}"\n'
        f"{_table(UNMETERED)}"
        f'[gateway]\nreplicas = {json.dumps(list(addresses))}\npolicy = "{policy}"\n'
        f'replica_api_key = "{GATEWAY_KEY}"\n{_table(GATEWAY | settings)}'
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
    """Replicas and the gateway as `tandem cloud` processes (the full run): ``REPLICAS`` replicas, plus with
    ``slow`` one at half speed, which only the heterogeneous scenario's gateway routes to (instead of the last
    regular one)."""

    def __init__(self, work: Path, replica: dict[str, Any], *, slow: bool = False) -> None:
        self.work, self.replica, self.slow = work, replica, slow
        self.replicas: list[subprocess.Popen[bytes]] = []
        self.addresses: list[str] = []
        self._runs = 0

    async def start(self) -> None:
        configs = []
        for name, options in (("replica", self.replica), ("slow-replica", _scaled(self.replica, SLOW_SPEED))):
            configs.append(self.work / f"{name}.toml")
            configs[-1].write_text(_replica_toml(options))
        started = await asyncio.gather(*(
            _spawn(["serve", "-c", str(configs[i == REPLICAS])], self.work / f"replica-{i}.log")
            for i in range(REPLICAS + self.slow)))
        self.replicas = [process for process, _ in started]
        self.addresses = [f"127.0.0.1:{port}" for _, port in started]

    def members(self, slow: bool) -> list[str]:
        return [self.addresses[index] for index in _members(slow)]

    @contextlib.asynccontextmanager
    async def gateway(self, policy: str, *, slow: bool = False,
                      settings: dict[str, Any] | None = None) -> AsyncIterator[str]:
        """A gateway (``GATEWAY`` then ``settings``) in front of the regular replicas, or with ``slow`` the
        slow one in the last one's place; stopped on exit."""
        self._runs += 1
        name = f"gateway-{self._runs}-{policy}"
        config = self.work / f"{name}.toml"
        config.write_text(_gateway_toml(self.members(slow), policy, settings or {}))
        process, port = await _spawn(["gateway", "-c", str(config)], self.work / f"{name}.log")
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

        profiles = [self.replica] * REPLICAS + [_scaled(self.replica, SLOW_SPEED)] * self.slow
        self.fleet = LocalFleet(
            model=MODEL, api_key=CALLER_KEY, tenant="bench", replicas=len(profiles), **UNMETERED,
            engines=lambda index: simulator_model(model=MODEL, version="v1", options=profiles[index]),
            settings=FleetSettings(gateway=GATEWAY, replica_limits=Limits(**REPLICA_LIMITS), replica_key=GATEWAY_KEY,
                                   drain_timeout_s=DRAIN_TIMEOUT_S),
        )
        self.addresses = await self.fleet.start_replicas()

    @contextlib.asynccontextmanager
    async def gateway(self, policy: str, *, slow: bool = False,
                      settings: dict[str, Any] | None = None) -> AsyncIterator[str]:
        target = await self.fleet.start_gateway({"policy": policy, **(settings or {})}, replicas=_members(slow))
        try:
            yield target
        finally:
            await self.fleet.gateway.drain(DRAIN_TIMEOUT_S)
            await self.fleet.stop_gateway(0.1)

    async def stop(self) -> None:
        await self.fleet.close()


# -- the plot ------------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    """Latency percentiles per policy, with the no-queueing floor dashed, as a PNG: e2e on equal replicas
    (each profile), e2e and TTFT with one slow replica and bursts, TTFT of the shared-prefix chats, and the
    admitted requests' e2e under overload against the same policy at ``--load``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(17, 8.5))
    gpu, compute, burst, load = result, result["compute_bound"], result["bursty"], result["workload"]["load"]
    overload = {f"{OVERLOAD_POLICY} at {load:.0%}": compute["policies"][OVERLOAD_POLICY],
                f"{OVERLOAD_POLICY} at {result['overload']['factor']:.0%}, admitted": result["overload"]}
    panels = [
        (axes[0][0], gpu["policies"], gpu["floor"], "e2e_percentiles_ms", "GPU-like, equal replicas: end-to-end"),
        (axes[0][1], compute["policies"], compute["floor"], "e2e_percentiles_ms",
         "compute-bound, equal replicas: end-to-end"),
        (axes[0][2], burst["policies"], burst["floor"], "e2e_percentiles_ms",
         "compute-bound, one replica at half speed, bursty: end-to-end"),
        (axes[1][0], burst["policies"], None, "ttft_percentiles_ms",
         "compute-bound, one replica at half speed, bursty: TTFT"),
        (axes[1][1], result["prefix"], None, "ttft_percentiles_ms", "compute-bound, shared-prefix chats: TTFT"),
        (axes[1][2], overload, compute["floor"], "e2e_percentiles_ms", "compute-bound, overload: end-to-end"),
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
    figure.suptitle(f"gateway policies, {REPLICAS} simulated replicas at {load:.0%} of capacity "
                    "(benchmarks/fleet.py)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    figure.savefig(partial, format="png", dpi=110)
    plt.close(figure)
    os.replace(partial, path)


# -- main ----------------------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and not math.isnan(denominator) else math.nan


class Bench:
    """One run of every scenario: the options, the logger, and each policy's runs."""

    def __init__(self, options: argparse.Namespace, log: Any) -> None:
        self.options, self.log = options, log
        self.speedup = QUICK_SPEEDUP if options.quick else 1
        self.workload = QUICK if options.quick else FULL
        self.profiles = {name: _scaled(replica, self.speedup) for name, replica in PROFILES.items()}

    def report(self, name: str, row: dict[str, Any]) -> None:
        self.log(f"{name:>44}: TTFT p50 {row['ttft_p50_ms']:.0f} ms, p99 {row['ttft_p99_ms']:.0f} ms; e2e p99 "
                 f"{row['e2e_p99_ms']:.0f} ms; {row['throughput_tps']:.0f} tok/s; {row['errors']} errors")

    async def policies(self, fleet: ProcessFleet, policies: Sequence[str], arrivals: list[Arrival], tag: str,
                       *, slow: bool = False) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for policy in policies:
            async with fleet.gateway(policy, slow=slow) as target:
                rows[policy] = summarize(await run_heterogeneous(target, arrivals, f"{tag}-{policy}"))
            self.report(f"{tag}, {policy}", rows[policy])
        return rows

    async def equal(self, fleet: ProcessFleet, profile: str) -> dict[str, Any]:
        """Poisson arrivals at ``--load`` on equal replicas, round-robin and P2C, with the floor."""
        replica = self.profiles[profile]
        limits = capacity(self.workload, replica)
        rate = self.options.load * limits["rps"]
        arrivals = heterogeneous(self.workload, self.options.requests, rate, self.options.seed)
        rows = await self.policies(fleet, POLICIES, arrivals, f"{profile}, equal")
        below = floor(arrivals, replica)
        return {"replica": replica, "capacity": limits, "rate_rps": rate, "floor": below, "policies": rows,
                "p2c_vs_rr_p99_ratio": _ratio(rows["p2c"]["e2e_p99_ms"], rows["round_robin"]["e2e_p99_ms"]),
                "rr_vs_floor_p99_ratio": _ratio(rows["round_robin"]["e2e_p99_ms"], below["e2e_p99_ms"])}

    async def bursty(self, fleet: ProcessFleet, limits: dict[str, Any]) -> dict[str, Any]:
        """One replica at half speed and bursty arrivals at ``--load`` of the 3.5 replicas' capacity."""
        replica = self.profiles["compute_bound"]
        rate = self.options.load * limits["rps"] * (REPLICAS - 1 + SLOW_SPEED) / REPLICAS
        bursts = BURSTS.scaled(self.speedup)
        arrivals = bursty(self.workload, self.options.bursty_requests, rate, self.options.seed + 1, bursts)
        rows = await self.policies(fleet, BURSTY_POLICIES, arrivals, "1 slow + bursts", slow=True)
        span = arrivals[-1].at if arrivals else 0.0
        ratios = {f"{policy}_vs_{base}_p99_ratio": _ratio(rows[policy]["e2e_p99_ms"], rows[base]["e2e_p99_ms"])
                  for policy in ("p2c", "least_loaded") for base in ("round_robin", "random")}
        # the floor of a request is on a full-speed replica: the best place any balancer could have sent it
        return {"rate_rps": rate, "bursts": dataclasses.asdict(bursts), "requests": len(arrivals),
                "span_s": span, "in_burst_share": sum(a.burst for a in arrivals) / max(1, len(arrivals)),
                "floor": floor(arrivals, replica), "policies": rows, "ratios": ratios}

    async def overload(self, fleet: ProcessFleet, limits: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
        """``--overload`` x capacity for ``--overload-s`` through a gateway with admission control on."""
        rate = self.options.overload * limits["rps"]
        duration = self.options.overload_s
        deadline = OVERLOAD_DEADLINE_S / self.speedup
        arrivals = for_duration(self.workload, duration, rate, self.options.seed + 2)
        async with fleet.gateway(OVERLOAD_POLICY, settings=OVERLOAD_GATEWAY) as target:
            run = await run_heterogeneous(target, arrivals, "overload", timeout_s=deadline)
        row = summarize_overload(run, duration)
        self.report(f"overload {self.options.overload:.0%}, {OVERLOAD_POLICY}, admitted", row)
        self.log(f"{'':>44}  {row['shed']} of {row['offered']} shed ({row['shed_share']:.1%}: {row['shed_reasons']}), "
                 f"retry-after p50 {row['retry_after_ms']['p50']:.0f} ms, {row['admitted_failed']} admitted failed")
        return {"policy": OVERLOAD_POLICY, "factor": self.options.overload, "duration_s": duration,
                "rate_rps": rate, "deadline_s": deadline, "gateway": OVERLOAD_GATEWAY, **row,
                "reference_e2e_p99_ms": reference["e2e_p99_ms"],
                "p99_vs_load_ratio": _ratio(row["e2e_p99_ms"], reference["e2e_p99_ms"])}

    async def chats(self, fleet: ProcessFleet, rate: float) -> dict[str, Any]:
        """The shared-prefix chats under P2C and P2C + affinity (same conversations)."""
        options = self.options
        chat_rate = options.conversations / (options.requests / rate)  # conversations start over a similar span
        chats = conversations(self.workload, options.conversations, options.turns, chat_rate, options.seed)
        rows: dict[str, Any] = {}
        for policy in PREFIX_POLICIES:
            async with fleet.gateway(policy) as target:
                rows[policy] = summarize_chats(await run_conversations(target, chats, f"chat-{policy}"))
            self.report(f"chats, {policy}", rows[policy])
            self.log(f"{'':>44}  prefix cache hit ratio {rows[policy]['cache_hit_ratio']:.1%} "
                     f"(turns after the first: {rows[policy]['later_turns_cache_hit_ratio']:.1%})")
        return rows

    async def bursty_only(self) -> dict[str, Any]:
        """The heterogeneous, bursty scenario alone (``--only bursty``): one seed's balancer ratios, for a
        median over seeds (one run's p99 moves about 10 %)."""
        with tempfile.TemporaryDirectory(prefix="tandem-fleet-") as folder:
            fleet = await self.fleet("compute_bound", Path(folder), slow=True)
            try:
                burst = await self.bursty(fleet, capacity(self.workload, self.profiles["compute_bound"]))
            finally:
                await fleet.stop()
        return {"seed": self.options.seed, "bursty": burst, **{f"bursty_{name}": value
                                                               for name, value in burst["ratios"].items()}}

    async def fleet(self, profile: str, work: Path, *, slow: bool) -> ProcessFleet:
        folder = work / profile
        folder.mkdir()
        fleet = (InProcessFleet if self.options.quick else ProcessFleet)(folder, self.profiles[profile], slow=slow)
        await fleet.start()
        return fleet

    async def run(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="tandem-fleet-") as folder:
            work = Path(folder)
            fleet = await self.fleet("gpu", work, slow=False)
            try:
                gpu = await self.equal(fleet, "gpu")
            finally:
                await fleet.stop()
            fleet = await self.fleet("compute_bound", work, slow=True)
            try:
                compute = await self.equal(fleet, "compute_bound")
                overload = await self.overload(fleet, compute["capacity"], compute["policies"][OVERLOAD_POLICY])
                prefix = await self.chats(fleet, compute["rate_rps"])
                burst = await self.bursty(fleet, compute["capacity"])
            finally:
                await fleet.stop()
        return self.result(gpu, compute, burst, overload, prefix)

    def result(self, gpu: dict[str, Any], compute: dict[str, Any], burst: dict[str, Any], overload: dict[str, Any],
               prefix: dict[str, Any]) -> dict[str, Any]:
        options = self.options
        gain = _ratio(prefix["p2c"]["ttft_p50_ms"], prefix["p2c_affinity"]["ttft_p50_ms"])
        p99 = {policy: prefix[policy]["ttft_p99_ms"] for policy in PREFIX_POLICIES}
        ratios = burst["ratios"]
        return {
            "fleet": {"replicas": REPLICAS, "replica": gpu["replica"], "gateway": GATEWAY,
                      "processes": not options.quick},
            "workload": {"requests": options.requests, "load": options.load, "capacity_rps": gpu["capacity"]["rps"],
                         "capacity": gpu["capacity"], "rate_rps": gpu["rate_rps"],
                         **dataclasses.asdict(self.workload), "conversations": options.conversations,
                         "turns": options.turns, "bursty_requests": options.bursty_requests,
                         "overload": options.overload, "overload_s": options.overload_s, "seed": options.seed},
            "policies": gpu["policies"],
            "floor": gpu["floor"],
            "p2c_vs_rr_p99_ratio": gpu["p2c_vs_rr_p99_ratio"],
            "rr_vs_floor_p99_ratio": gpu["rr_vs_floor_p99_ratio"],
            "compute_bound": compute,
            "compute_bound_p2c_vs_rr_p99_ratio": compute["p2c_vs_rr_p99_ratio"],
            "bursty": burst,
            "bursty_p2c_vs_rr_p99_ratio": ratios["p2c_vs_round_robin_p99_ratio"],
            "bursty_p2c_vs_random_p99_ratio": ratios["p2c_vs_random_p99_ratio"],
            "bursty_least_loaded_vs_rr_p99_ratio": ratios["least_loaded_vs_round_robin_p99_ratio"],
            "bursty_least_loaded_vs_random_p99_ratio": ratios["least_loaded_vs_random_p99_ratio"],
            "overload": overload,
            "overload_shed_share": overload["shed_share"],
            "overload_p99_vs_load_ratio": overload["p99_vs_load_ratio"],
            "overload_admitted_failed": overload["admitted_failed"],
            "prefix": prefix,
            "prefix_ttft_p50_gain": gain,
            "prefix_ttft_p99_ms": p99,
            "prefix_cache_hit_ratio": {policy: prefix[policy]["cache_hit_ratio"] for policy in PREFIX_POLICIES},
            "goals": GOALS | {"met": {
                "bursty_p2c_vs_rr_p99_ratio":
                    ratios["p2c_vs_round_robin_p99_ratio"] <= GOALS["bursty_p2c_vs_rr_p99_ratio_max"],
                "bursty_p2c_vs_random_p99_ratio":
                    ratios["p2c_vs_random_p99_ratio"] <= GOALS["bursty_p2c_vs_random_p99_ratio_max"],
                "overload_sheds_at_admission": overload["shed"] > 0 and overload["shed_without_retry_after"] == 0,
                "overload_p99_vs_load_ratio":
                    overload["p99_vs_load_ratio"] <= GOALS["overload_p99_vs_load_ratio_max"],
                "overload_admitted_failed": overload["admitted_failed"] <= GOALS["overload_admitted_failed_max"],
                "prefix_ttft_p50_gain": gain >= GOALS["prefix_ttft_p50_gain_min"] and p99["p2c_affinity"] <= p99["p2c"],
            }},
        }


def _print(result: dict[str, Any], options: argparse.Namespace) -> None:
    table = Table(title=f"{REPLICAS} simulated replicas at {options.load:.0%} of capacity (overload: "
                        f"{options.overload:.0%} for {options.overload_s:g} s)")
    for column in ("scenario, policy", "TTFT p50", "TTFT p99", "e2e p50", "e2e p99", "tok/s", "errors"):
        table.add_column(column, justify="right", no_wrap=True)
    compute, burst, overload = result["compute_bound"], result["bursty"], result["overload"]
    rows = [*((f"GPU-like equal, {k}", v) for k, v in result["policies"].items()),
            ("GPU-like equal, alone (floor)", result["floor"]),
            *((f"compute-bound equal, {k}", v) for k, v in compute["policies"].items()),
            ("compute-bound equal, alone (floor)", compute["floor"]),
            *((f"1 slow + bursts, {k}", v) for k, v in burst["policies"].items()),
            ("1 slow + bursts, alone (floor)", burst["floor"]),
            (f"overload, {overload['policy']} (admitted)", overload),
            *((f"chats, {k}", v) for k, v in result["prefix"].items())]
    for name, row in rows:
        table.add_row(name, f"{row['ttft_p50_ms']:.0f} ms", f"{row['ttft_p99_ms']:.0f} ms",
                      f"{row['e2e_p50_ms']:.0f} ms", f"{row['e2e_p99_ms']:.0f} ms",
                      f"{row['throughput_tps']:.0f}" if "throughput_tps" in row else "",
                      str(row.get("errors", "")))
    console = Console(width=max(Console().width, 110))
    console.print(table)
    goals, met = result["goals"], result["goals"]["met"]

    def mark(name: str) -> str:
        return "met" if met[name] else "NOT met"

    p99 = result["prefix_ttft_p99_ms"]
    hits = result["prefix_cache_hit_ratio"]
    console.print(
        f"1 slow + bursts, e2e p99: P2C / round-robin {result['bursty_p2c_vs_rr_p99_ratio']:.2f} (goal <= "
        f"{goals['bursty_p2c_vs_rr_p99_ratio_max']}: {mark('bursty_p2c_vs_rr_p99_ratio')}), P2C / random "
        f"{result['bursty_p2c_vs_random_p99_ratio']:.2f} (goal <= {goals['bursty_p2c_vs_random_p99_ratio_max']}: "
        f"{mark('bursty_p2c_vs_random_p99_ratio')}); least-loaded / round-robin "
        f"{result['bursty_least_loaded_vs_rr_p99_ratio']:.2f}, / random "
        f"{result['bursty_least_loaded_vs_random_p99_ratio']:.2f}\n"
        f"overload {overload['factor']:.0%} for {overload['duration_s']:g} s: {overload['shed_share']:.1%} shed "
        f"({overload['shed']} of {overload['offered']}, {overload['shed_without_retry_after']} without retry-after-ms: "
        f"{mark('overload_sheds_at_admission')}); admitted e2e p99 / at {options.load:.0%} load "
        f"{overload['p99_vs_load_ratio']:.2f} (goal <= {goals['overload_p99_vs_load_ratio_max']}: "
        f"{mark('overload_p99_vs_load_ratio')}); {overload['admitted_failed']} admitted streams failed (goal 0: "
        f"{mark('overload_admitted_failed')})\n"
        f"prefix affinity: TTFT p50 gain {result['prefix_ttft_p50_gain']:.1f} x (goal >= "
        f"{goals['prefix_ttft_p50_gain_min']}, p99 not raised: {mark('prefix_ttft_p50_gain')}), TTFT p99 "
        f"{p99['p2c_affinity']:.0f} ms vs {p99['p2c']:.0f} ms, cache hit ratio {hits['p2c_affinity']:.1%} vs "
        f"{hits['p2c']:.1%}\n"
        f"equal replicas (no goal): P2C / round-robin e2e p99 {result['p2c_vs_rr_p99_ratio']:.2f} GPU-like, "
        f"{result['compute_bound_p2c_vs_rr_p99_ratio']:.2f} compute-bound; round-robin / floor "
        f"{result['rr_vs_floor_p99_ratio']:.2f} GPU-like, {compute['rr_vs_floor_p99_ratio']:.2f} compute-bound; "
        f"plot: {result['plot']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true", help="a smoke run: in-process fleet, few requests")
    parser.add_argument("--requests", type=int, default=None, help="requests per equal-replica run [500]")
    parser.add_argument("--load", type=float, default=0.8, help="arrival rate as a fraction of fleet capacity")
    parser.add_argument("--conversations", type=int, default=None, help="shared-prefix conversations [100]")
    parser.add_argument("--turns", type=int, default=None, help="turns per conversation [5]")
    parser.add_argument("--bursty-requests", type=int, default=None,
                        help="requests per run of the slow-replica, bursty scenario [500]")
    parser.add_argument("--overload", type=float, default=1.2, help="overload arrival rate / fleet capacity")
    parser.add_argument("--overload-s", type=float, default=None, help="how long the overload lasts, s [25]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="where the PNG goes")
    parser.add_argument("--only", choices=["bursty"], default=None,
                        help="run one scenario and print its JSON (bursty: the balancer goals, one seed)")
    options = parser.parse_args()
    quick = {"requests": 40, "conversations": 6, "turns": 2, "bursty_requests": 40, "overload_s": 1.0}
    full = {"requests": 500, "conversations": 100, "turns": 5, "bursty_requests": 500, "overload_s": 25.0}
    for name, value in (quick if options.quick else full).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    console = Console(stderr=True)
    started = time.perf_counter()
    if options.only == "bursty":
        print(json.dumps(asyncio.run(Bench(options, console.print).bursty_only()), indent=2))
        return
    result = asyncio.run(Bench(options, console.print).run())
    result["wall_s"] = time.perf_counter() - started
    plot(result, options.plot)
    result["plot"] = str(options.plot)
    if options.json:
        print(json.dumps(result, indent=2))
        return
    _print(result, options)


if __name__ == "__main__":
    main()
