"""What grpc.aio itself costs on this machine for the cloud benchmark's streams: the floor under its ratio.

    python -m benchmarks.grpc_floor [--json] [--rounds N] [--tokens N] [--streams 1,4,16,32] [--step-ms A,B]

A bare servicer of Tandem's ``Inference`` proto (no interceptor, auth, quotas, metrics, logs or engine), in a
process of its own, answers ``Generate`` calls with the chunks the replica would send: the first token at
once, then one chunk per ``cloud_service.servicer.chunk_interval`` at that concurrency, the last at the end,
paced like a batching engine whose step takes ``A + B x streams`` milliseconds. A bare grpc.aio client reads
them. Per concurrency and round: the CPU time the server process and the client took (``floor_cpu_ms``), and
as a share of all cores over the round (``floor_share``); and the median time from starting a round's calls to
each one's first chunk (``floor_ttft_p50_ms``), which the bare server sends at once: what concurrent calls
add to the time to first token before any engine runs.

Why: the CPU engine keeps every core busy while it decodes (its torch threads), so on a machine this small the
transport's CPU comes straight off the engine's tokens/s. ``benchmarks.cloud`` runs this after its rounds and
reports ``ratio_at_floor`` = direct round time / (direct round time + floor CPU / cores): the gRPC / direct
ratio to expect from a replica whose own work cost nothing beyond grpc.aio's, if the engine kept every core
busy all the time (it does not quite, so a run can land a little above it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.quiet import process_cpu_s

STEP_MS = (3.0, 0.17)
"""Default pacing: the CPU engine's decode step on the cloud benchmark's model on the 2-core machine, fitted to
its direct tokens/s at 1 and 32 streams (BENCHMARKS.md, "Cloud replica")."""
CONCURRENCY = (1, 4, 16, 32)


@dataclass(frozen=True)
class Pace:
    """One stream's shape: ``tokens`` over ``seconds``, sent as ``chunks`` messages."""

    tokens: int
    seconds: float
    chunks: int

    @classmethod
    def of(cls, streams: int, tokens: int, step_s: float) -> Pace:
        from cloud_service.servicer import chunk_interval

        seconds = tokens * step_s
        return cls(tokens, seconds, min(tokens, 2 + int(seconds / chunk_interval(streams))))


def _serve(ready: Any) -> None:
    """The bare server process: every call's request prompt is a Pace as JSON."""
    import grpc

    from cloud_service.wire.v1 import inference_pb2 as pb
    from cloud_service.wire.v1 import inference_pb2_grpc as pb_grpc

    class Bare(pb_grpc.InferenceServicer):
        async def Generate(self, request: Any, context: Any) -> Any:
            pace = Pace(**json.loads(request.prompt))
            rest, gap = pace.tokens - 1, pace.seconds / max(1, pace.chunks - 1)
            yield pb.GenerateChunk(text="abcd", token_ids=[7], logprobs=[-1.0], model_version="bench",
                                   vocabulary="f" * 16)
            for index in range(pace.chunks - 1):
                await asyncio.sleep(gap)
                count = rest // (pace.chunks - 1) + (index < rest % (pace.chunks - 1))
                yield pb.GenerateChunk(text="abcd" * count, token_ids=[7] * count, logprobs=[-1.0] * count)

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_InferenceServicer_to_server(Bare(), server)
        ready.send(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _rounds(port: int, server_pid: int, paces: dict[int, Pace], rounds: int) -> dict[int, dict[str, float]]:
    import grpc

    from cloud_service.channel import bearer_metadata
    from cloud_service.wire.v1 import inference_pb2 as pb
    from cloud_service.wire.v1 import inference_pb2_grpc as pb_grpc

    cores = os.cpu_count() or 1
    results: dict[int, dict[str, float]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def stream(pace: Pace, started: float, firsts: list[float]) -> int:
            request = pb.GenerateRequest(model="bench", prompt=json.dumps(pace.__dict__))
            tokens = 0
            async for chunk in stub.Generate(request, metadata=bearer_metadata("bench")):
                if not tokens:
                    firsts.append(time.perf_counter() - started)
                tokens += len(chunk.token_ids)
            return tokens

        await stream(Pace(2, 0.0, 2), time.perf_counter(), [])  # warm-up: the channel connects
        for streams, pace in paces.items():
            server0, client0, started = process_cpu_s(server_pid), _own_cpu_s(), time.perf_counter()
            firsts: list[float] = []
            for _ in range(rounds):
                now = time.perf_counter()
                counts = await asyncio.gather(*(stream(pace, now, firsts) for _ in range(streams)))
                if sum(counts) != streams * pace.tokens:
                    raise RuntimeError(f"the bare server sent {sum(counts)} tokens, not {streams * pace.tokens}")
            wall = time.perf_counter() - started
            cpu = process_cpu_s(server_pid) - server0 + _own_cpu_s() - client0
            results[streams] = {"floor_cpu_ms": 1000 * cpu / rounds, "floor_round_ms": 1000 * wall / rounds,
                                "floor_share": cpu / (wall * cores), "chunks_per_stream": pace.chunks,
                                "floor_ttft_p50_ms": 1000 * statistics.median(firsts)}
    return results


def measure(paces: dict[int, Pace], rounds: int) -> dict[int, dict[str, float]]:
    """Per concurrency: the transport's CPU per round (server + client, ms), the round's wall time and the CPU
    as a share of all cores, over ``rounds`` rounds of ``streams`` concurrent calls shaped by ``paces``."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    server = context.Process(target=_serve, args=(send,), daemon=True)
    server.start()
    try:
        if not receive.poll(60):
            raise RuntimeError("the bare grpc.aio server did not start")
        port = receive.recv()
        return asyncio.run(_rounds(port, server.pid or 0, paces, rounds))
    finally:
        server.kill()
        server.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument("--streams", type=lambda text: tuple(int(n) for n in text.split(",")), default=CONCURRENCY)
    parser.add_argument("--step-ms", type=lambda text: tuple(float(n) for n in text.split(",")), default=STEP_MS,
                        help="engine step = A + B x streams milliseconds (default %(default)s)")
    options = parser.parse_args()
    base, per_stream = options.step_ms
    paces = {n: Pace.of(n, options.tokens, (base + per_stream * n) / 1000) for n in options.streams}
    rows = measure(paces, options.rounds)
    if options.json:
        print(json.dumps({str(n): row for n, row in rows.items()}, indent=2))
        return
    for n, row in rows.items():
        print(f"{n:>3} streams: {row['chunks_per_stream']} chunks each, transport CPU {row['floor_cpu_ms']:.1f} ms "
              f"per {row['floor_round_ms']:.0f} ms round = {100 * row['floor_share']:.1f} % of the cores; "
              f"first chunk after {row['floor_ttft_p50_ms']:.1f} ms (p50)")


if __name__ == "__main__":
    main()
