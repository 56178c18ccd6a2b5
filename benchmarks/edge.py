"""Edge runtime speed: our engine vs the raw library it wraps, and llama.cpp vs ONNX Runtime.

    python -m benchmarks.edge [--json] [--cache DIR] [--rounds N] [--ttft-rounds N] [--threads N] [--quick]
                              [--only "gguf q4_k_m"] [--per-round] [--skip-rss]
                              [--onnx-decoder auto|genai|loop] [--compare-loop]

What: on the ~100M-parameter benchmark model (random weights) as four signed bundles (GGUF q4_k_m and q8_0
on llama.cpp, ONNX int4 and int8 on ONNX Runtime): prefill tokens/s, decode tokens/s and time to first token
(TTFT) through our engine (``load_bundle`` + ``engine.generate``, greedy, ``ignore_eos``) and through the raw
library, in the same run:

- GGUF raw: llama-cpp-python's own ``Llama(...)`` with the same n_ctx, n_batch and threads, its tokenizer, and
  its ``Llama.generate(tokens, temp=0, top_k=1)`` token loop (which never stops on EOS by itself).
- ONNX raw: onnxruntime-genai's generator loop (``append_tokens`` + ``generate_next_token``) over the same
  model.onnx, through a folder with a link to it and a genai_config.json mapping the graph's names; its EOS
  id is set to one the model cannot produce, so it runs to max_length like ours with ``ignore_eos``.
  Prompts are tokenized with the bundle's tokenizer.json, as our engine does.
Every generation's token count is checked, and ``same_tokens`` says whether both sides produced the same ids.
Our ONNX engine decodes with ``--onnx-decoder`` (EngineOptions.onnx_decoder, whose default it takes: "auto",
onnxruntime-genai's generator stepped by our engine where installed, as it is for the benchmarks; "loop": our
Python KV-cache loop). ``--compare-loop`` adds a third side on ONNX backends, our engine with the loop
(``onnx_decoder="loop"``), in the same rounds: ``loop_*`` figures, ``paired_loop_ratio`` (loop / raw) and
``paired_ours_over_loop``.

How: a round runs ours and raw once each on the same prompt (~128 tokens; each prompt starts with another
token than the one before, so neither side reuses more of its KV cache than the BOS token), the side that
goes first alternating, 50 ms apart; one warm-up round is thrown away. Decode is measured on ``--rounds``
rounds of 128 new tokens; TTFT and prefill on those plus ``--ttft-rounds`` one-token rounds. Both sides use
the same explicit thread count (default 2, this machine's cores). A round during which other processes took
more than 2 % of the cores (from /proc/stat) is discarded and run again once the machine is quiet.

Definitions (the same for both sides): TTFT = wall time from the call (ours: calling ``engine.generate``, so
the queue handoff to the worker thread, tokenization, prefill and the event's trip back to the event loop
count; raw: tokenization + prefill + first token) to the first token; prefill tokens/s = prompt tokens /
TTFT; decode tokens/s = (tokens after the first) / (first token -> last token). Figures are medians over
rounds; ``ratio`` = median ours / median raw and ``ttft_overhead_ms`` = median ours - median raw, and the
``paired_*`` figures are the medians of the per-round ratios and differences with a 95 % bootstrap interval
(the machine's speed drifts, so the paired figures are the steadier ones). TTFT is also split at the call
that evaluates the prompt, timed on both sides (ours: the decoder's ``prefill``; raw: llama-cpp-python's first
``Llama.eval`` in ``generate``, genai's ``append_tokens``): ``paired_ttft_outside_prefill_ms`` is the paired
difference of the rest (our layer: queue handoff, tokenization, first token's event and its trip back) and
``paired_prefill_call_diff_ms`` that of the calls themselves, the same library work on both sides, whose
spread is this machine's prefill noise. The peak RSS growth of loading each model (ours: verify + load;
raw: the library's load) is read once per side in a child process.

Goals (edge-runtime issue): decode ours / raw >= 0.97 and TTFT overhead <= 2 ms on every backend. Bundles
and the signing key that verifies them are cached under ``--cache``/edge-bundles (rebuilt when they fail
verification).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.quiet import OtherCpu, median_ci
from edge_runtime import EngineOptions, GenerationRequest, LocalEngine, SamplingParams, load_bundle
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.loading import ONNX_DECODERS

BACKENDS = [("gguf", "q4_k_m"), ("gguf", "q8_0"), ("onnx", "int4"), ("onnx", "int8")]
LEVELS = {"q4": ("gguf q4_k_m", "onnx int4"), "q8": ("gguf q8_0", "onnx int8")}
GOAL_RATIO, GOAL_TTFT_MS = 0.97, 2.0
KEY_PREFIX = "signing"
OTHER_CPU_MAX, OTHER_CPU_FLOOR = 0.02, 0.03
"""Share of all cores (and CPU seconds, whichever is more) that other processes may take during a round before it
is measured again."""
PAUSE = 0.05
"""Seconds between two generations, so that one side's spinning threads do not slow the other's start."""
TTFT_ROUNDS = 80
"""One-token rounds per backend on top of the decode rounds: twice the 40 first used, whose paired TTFT interval
was far wider than the 2 ms goal it checks where prefill speed drifts (BENCHMARKS.md, "Edge runtime")."""
LLAMA_MAX_BATCH = 512  # edge_runtime.backends.gguf.MAX_BATCH: raw gets the same n_batch


@dataclass
class Run:
    """One generation's timings."""

    prompt_tokens: int
    tokens: list[int]
    ttft: float
    decode: float  # first token -> last token
    prefill: float = 0.0
    """Seconds inside the prompt's evaluation call (PrefillClock), part of ``ttft``."""

    @property
    def decode_tps(self) -> float:
        return (len(self.tokens) - 1) / self.decode

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.ttft


# -- bundles -------------------------------------------------------------------------------------------------


def signing_key(folder: Path) -> tuple[Any, Any]:
    """(private, public) key kept next to the cached bundles; made on first use."""
    from edge_runtime.bundle import load_public_key
    from export.signing_keys import generate_keypair, load_private_key

    prefix = folder / KEY_PREFIX
    private, public = prefix.with_name(KEY_PREFIX + ".key"), prefix.with_name(KEY_PREFIX + ".pub")
    if not (private.is_file() and public.is_file()):
        private.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        generate_keypair(prefix)
    return load_private_key(private), load_public_key(public)


def prepare_bundles(cache: Path, log: Callable[[str], None]) -> tuple[dict[str, Path], Any, Path]:
    """The four signed bundles under cache/edge-bundles, built (or rebuilt when they fail verification) once.
    Returns ({"gguf q4_k_m": folder, ...}, public key, benchmark model folder)."""
    from edge_runtime.bundle import verify_bundle
    from export.toy_models import ToyModelSpec, cached_toy_model

    folder = cache / "edge-bundles"
    folder.mkdir(parents=True, exist_ok=True)
    private, public = signing_key(folder)
    model = cached_toy_model(ToyModelSpec.bench("llama"), cache)
    bundles, source, evaluation = {}, None, None
    for fmt, quantization in BACKENDS:
        out = folder / f"{fmt}-{quantization}"
        try:
            verify_bundle(out, [public])
        except EdgeRuntimeError as exc:
            if source is None:
                from benchmarks.export import MEASURE_ONLY
                from export.quality import Evaluation
                from export.source import SourceModel
                from export.toy_models.corpus import corpus_lines

                source = SourceModel.open(model)
                evaluation = Evaluation("\n".join(corpus_lines(400, seed=4242)), MEASURE_ONLY, 128, 2)
            log(f"building {out.name} ({exc.__class__.__name__})")
            started = time.perf_counter()
            if fmt == "gguf":
                from export.gguf.pipeline import build_gguf_bundle as build
            else:
                from export.onnx.bundle import build_onnx_bundle as build
            build(source, out, quantization, private, evaluation=evaluation, overwrite=True)
            log(f"built {out.name} in {time.perf_counter() - started:.1f} s")
        bundles[f"{fmt} {quantization}"] = out
    return bundles, public, model


def genai_folder(bundle: Path, threads: int, context: int) -> Path:
    """A folder onnxruntime-genai can open: links to the bundle's model files and a genai_config.json that maps
    the optimum graph's names (rewritten every run, so it follows --threads and a rebuilt bundle)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = json.loads((bundle / "config.json").read_text())
    kv = manifest["extra"]["onnx"]["io"]["kv_cache"]
    out = bundle.with_name(bundle.name + "-genai")
    out.mkdir(exist_ok=True)
    for name in manifest["files"]:
        if name.startswith("model."):
            link = out / name
            link.unlink(missing_ok=True)
            link.symlink_to((bundle / name).resolve())
    never = config["vocab_size"] + 1000  # an EOS id the model cannot produce: genai then runs to max_length
    genai = {
        "model": {
            "bos_token_id": config["bos_token_id"], "context_length": context, "eos_token_id": never,
            "pad_token_id": config["pad_token_id"], "type": config["model_type"], "vocab_size": config["vocab_size"],
            "decoder": {
                "session_options": {"log_id": "genai", "provider_options": [], "intra_op_num_threads": threads},
                "filename": manifest["model_file"], "head_size": kv["head_dim"], "hidden_size": config["hidden_size"],
                "num_attention_heads": config["num_attention_heads"], "num_hidden_layers": kv["num_layers"],
                "num_key_value_heads": kv["num_kv_heads"],
                "inputs": {
                    "input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                    "past_key_names": kv["past_key"].replace("{layer}", "%d"),
                    "past_value_names": kv["past_value"].replace("{layer}", "%d"),
                },
                "outputs": {
                    "logits": "logits", "present_key_names": kv["present_key"].replace("{layer}", "%d"),
                    "present_value_names": kv["present_value"].replace("{layer}", "%d"),
                },
            },
        },
        "search": {"do_sample": False, "max_length": context, "num_beams": 1, "past_present_share_buffer": False},
    }
    (out / "genai_config.json").write_text(json.dumps(genai, indent=2))
    return out


# -- prompts -------------------------------------------------------------------------------------------------


def make_prompts(tokenizer: Any, tokens: int) -> Iterator[str]:
    """Prompts of about ``tokens`` tokens (BOS included) from the toy corpus, each starting with a different
    token than the one before, so that a KV-cache prefix match stops at the BOS token. The same every run."""
    from export.toy_models.corpus import corpus_lines

    previous = None
    for index in itertools.count():
        lines = list(corpus_lines(60, seed=7000 + index))
        while True:
            text = " ".join(lines)
            encoding = tokenizer.encode(text, add_special_tokens=False)
            if encoding.ids[0] != previous:
                break
            lines.append(lines.pop(0))
        previous = encoding.ids[0]
        yield text[: encoding.offsets[tokens - 2][1]]  # tokens - 1 ids + BOS


# -- the two sides -------------------------------------------------------------------------------------------


class PrefillClock:
    """How long the first call of a wrapped function took since ``reset``: wrapped around the call that
    evaluates the prompt (ours: the decoder's ``prefill``; llama-cpp-python: ``Llama.eval``, whose first call in
    ``generate`` is the prompt's), it splits TTFT into the runtime's prompt evaluation and everything else."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def reset(self) -> None:
        self.seconds = None

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.seconds is not None:
                return call(*args, **kwargs)
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds = time.perf_counter() - started

        return timed


async def _ours(engine: LocalEngine, prompt: str, new_tokens: int) -> Run:
    sampling = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    request = GenerationRequest(prompt=prompt, sampling=sampling)
    tokens: list[int] = []
    first = last = 0.0
    prompt_tokens = 0
    started = time.perf_counter()
    async for event in engine.generate(request):
        last = time.perf_counter()
        if not tokens:
            first = last
        if event.token_id is not None:
            tokens.append(event.token_id)
        if event.usage is not None:
            prompt_tokens = event.usage.prompt_tokens
    return Run(prompt_tokens, tokens, first - started, last - first)


class RawLlamaCpp:
    def __init__(self, model_file: Path, threads: int, context: int, batch_threads: int | None = None) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(model_file), n_ctx=context, n_batch=min(LLAMA_MAX_BATCH, context),
            n_threads=threads, n_threads_batch=batch_threads or threads, verbose=False,
        )
        self.clock = PrefillClock()
        self.llm.eval = self.clock.wrap(self.llm.eval)  # type: ignore[method-assign]

    def run(self, prompt: str, new_tokens: int) -> Run:
        llm, tokens = self.llm, []
        self.clock.reset()
        started = time.perf_counter()
        prompt_ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        for token in llm.generate(prompt_ids, temp=0.0, top_k=1):  # never stops on EOS by itself
            now = time.perf_counter()
            if not tokens:
                first = now
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        assert self.clock.seconds is not None
        return Run(len(prompt_ids), tokens, first - started, now - first, self.clock.seconds)

    def close(self) -> None:
        self.llm.close()


class RawGenai:
    def __init__(self, folder: Path, tokenizer_file: Path) -> None:
        import onnxruntime_genai as og
        from tokenizers import Tokenizer

        self.og = og
        self.model = og.Model(str(folder))
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def run(self, prompt: str, new_tokens: int) -> Run:
        og, tokens = self.og, []
        started = time.perf_counter()
        prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=True).ids
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt_ids) + new_tokens, do_sample=False)
        generator = og.Generator(self.model, params)
        prefill_started = time.perf_counter()
        generator.append_tokens(prompt_ids)
        prefill = time.perf_counter() - prefill_started
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            now = time.perf_counter()
            if not tokens:
                first = now
            tokens.append(token)
        del generator
        return Run(len(prompt_ids), tokens, first - started, now - first, prefill)

    def close(self) -> None:
        del self.model


def wait_for_quiet(log: Callable[[str], None], window: float = 2.0, patience: float = 900.0) -> None:
    """Return once other processes took at most OTHER_CPU_MAX of the cores over ``window`` seconds."""
    cores, deadline, told = os.cpu_count() or 1, time.monotonic() + patience, False
    while True:
        with OtherCpu() as meter:
            time.sleep(window)
        if meter.seconds / (window * cores) <= OTHER_CPU_MAX:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the machine was busy with other processes for {patience:.0f} s; measure again later")
        if not told:
            log(f"  other processes use {100 * meter.seconds / (window * cores):.0f} % of the CPU; waiting")
            told = True


@dataclass
class Settings:
    rounds: int
    ttft_rounds: int
    new_tokens: int
    threads: int
    context: int
    per_round: bool = False
    batch_threads: int | None = None
    """Prefill threads (llama.cpp's n_threads_batch) for both sides; None: ``threads``."""
    onnx_decoder: str = EngineOptions.onnx_decoder
    """EngineOptions.onnx_decoder of our ONNX engine."""
    compare_loop: bool = False
    """ONNX backends: also run our engine with the Python loop (onnx_decoder="loop") in every round."""


def alternate(
    sides: dict[str, Callable[[str, int], Run]], prompts: Iterator[str], rounds: int, new_tokens: int,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Run]], int, float]:
    """A warm-up round + ``rounds`` rounds of every side on one prompt each, rotating which side goes first
    (two sides: alternating). A round in which other processes took more than OTHER_CPU_MAX of the cores is
    discarded and run again (on the next prompt) once the machine is quiet, at most ``2 * rounds`` times.
    Returns (rounds as {side: run}, discarded, the largest share of the CPU other processes took in a kept
    round)."""
    names = list(sides)
    pairs: list[dict[str, Run]] = []
    discarded, other, cores = 0, 0.0, os.cpu_count() or 1
    wait_for_quiet(log)
    for index, prompt in enumerate(prompts):
        if len(pairs) > rounds:
            break
        if discarded > 2 * rounds:
            raise RuntimeError(f"{discarded} rounds were disturbed by other processes; measure again when it is quiet")
        pair = {}
        started = time.perf_counter()
        turn = index % len(names)
        with OtherCpu() as meter:
            for side in names[turn:] + names[:turn]:
                time.sleep(PAUSE)
                pair[side] = sides[side](prompt, new_tokens)
        share = meter.seconds / ((time.perf_counter() - started) * cores)
        if pairs and meter.seconds > max(OTHER_CPU_MAX * (time.perf_counter() - started) * cores, OTHER_CPU_FLOOR):
            discarded += 1
            log(f"  round {index}: other processes took {100 * share:.0f} % of the CPU; measuring it again")
            wait_for_quiet(log)
            continue
        for side, run in pair.items():
            if len(run.tokens) != new_tokens:
                raise RuntimeError(f"{side}: generated {len(run.tokens)} tokens instead of {new_tokens}")
        pairs.append(pair)
        other = max(other, share) if len(pairs) > 1 else 0.0
    return pairs[1:], discarded, other


def bench_backend(
    name: str, bundle: Path, public_key: Any, prompts: Iterator[str], settings: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    """Decode rounds (``new_tokens`` each) and one-token TTFT rounds of our engine and the raw library."""
    def open_engine(onnx_decoder: str) -> LocalEngine:
        return load_bundle(
            bundle, trusted_keys=[public_key],
            options=EngineOptions(context_length=settings.context, threads=settings.threads,
                                  batch_threads=settings.batch_threads, lazy=False, onnx_decoder=onnx_decoder),
        )

    engine = open_engine(settings.onnx_decoder)
    engines = {"ours": engine}
    if settings.compare_loop and name.startswith("onnx"):
        engines["loop"] = open_engine("loop")
    if name.startswith("gguf"):
        raw: RawLlamaCpp | RawGenai = RawLlamaCpp(
            bundle / engine.manifest.model_file, settings.threads, settings.context, settings.batch_threads
        )
    else:
        raw = RawGenai(genai_folder(bundle, settings.threads, settings.context), bundle / "tokenizer.json")
    loop = asyncio.new_event_loop()

    def run_engine(side: LocalEngine) -> Callable[[str, int], Run]:
        clock, decoder = PrefillClock(), side._decoder  # loaded (lazy=False); its prefill gets timed
        decoder.prefill = clock.wrap(decoder.prefill)  # type: ignore[union-attr, method-assign]

        def run(prompt: str, new_tokens: int) -> Run:
            clock.reset()
            measured = loop.run_until_complete(_ours(side, prompt, new_tokens))
            assert clock.seconds is not None
            return replace(measured, prefill=clock.seconds)

        return run

    sides = {key: run_engine(value) for key, value in engines.items()} | {"raw": raw.run}
    try:
        rounds, discarded, other = alternate(sides, prompts, settings.rounds, settings.new_tokens, log)
        first_rounds, more_discarded, more_other = alternate(sides, prompts, settings.ttft_rounds, 1, log)
    finally:
        loop.close()
        for value in engines.values():
            value.close()
        raw.close()
    first_rounds += rounds  # every generation's first token counts for TTFT
    pairs = [(r["ours"], r["raw"]) for r in rounds]
    first_pairs = [(r["ours"], r["raw"]) for r in first_rounds]

    def median(values: Iterator[float]) -> float:
        return statistics.median(values)

    ratio_ci = median_ci([o.decode_tps / r.decode_tps for o, r in pairs])
    overhead_ci = median_ci([1000 * (o.ttft - r.ttft) for o, r in first_pairs])
    outside_ci = median_ci([1000 * ((o.ttft - o.prefill) - (r.ttft - r.prefill)) for o, r in first_pairs])
    prefill_ci = median_ci([1000 * (o.prefill - r.prefill) for o, r in first_pairs])
    row = {
        "onnx_decoder": settings.onnx_decoder if name.startswith("onnx") else None,
        "decode_tps": median(o.decode_tps for o, _ in pairs),
        "raw_decode_tps": median(r.decode_tps for _, r in pairs),
        "prefill_tps": median(o.prefill_tps for o, _ in first_pairs),
        "raw_prefill_tps": median(r.prefill_tps for _, r in first_pairs),
        "ttft_ms": 1000 * median(o.ttft for o, _ in first_pairs),
        "raw_ttft_ms": 1000 * median(r.ttft for _, r in first_pairs),
        "prompt_tokens": median(o.prompt_tokens for o, _ in first_pairs),
        "raw_prompt_tokens": median(r.prompt_tokens for _, r in first_pairs),
        "same_tokens": all(o.tokens == r.tokens for o, r in pairs),
        "paired_ratio": ratio_ci[0],
        "paired_ratio_ci95": [ratio_ci[1], ratio_ci[2]],
        "paired_ttft_overhead_ms": overhead_ci[0],
        "paired_ttft_overhead_ci95_ms": [overhead_ci[1], overhead_ci[2]],
        "paired_ttft_outside_prefill_ms": outside_ci[0],
        "paired_ttft_outside_prefill_ci95_ms": [outside_ci[1], outside_ci[2]],
        "paired_prefill_call_diff_ms": prefill_ci[0],
        "paired_prefill_call_diff_ci95_ms": [prefill_ci[1], prefill_ci[2]],
        "decode_rounds": len(pairs),
        "ttft_samples": len(first_pairs),
        "discarded_rounds": discarded + more_discarded,
        "other_cpu_pct_max": 100 * max(other, more_other),
    }
    row["ratio"] = row["decode_tps"] / row["raw_decode_tps"]
    row["ttft_overhead_ms"] = row["ttft_ms"] - row["raw_ttft_ms"]
    if "loop" in engines:
        row |= loop_figures(rounds, first_rounds)
    if settings.per_round:
        row["per_round"] = {
            "decode_tps": [round(o.decode_tps, 1) for o, _ in pairs],
            "raw_decode_tps": [round(r.decode_tps, 1) for _, r in pairs],
            "ttft_ms": [round(1000 * o.ttft, 1) for o, _ in first_pairs],
            "raw_ttft_ms": [round(1000 * r.ttft, 1) for _, r in first_pairs],
            "prefill_call_ms": [round(1000 * o.prefill, 2) for o, _ in first_pairs],
            "raw_prefill_call_ms": [round(1000 * r.prefill, 2) for _, r in first_pairs],
        }
        if "loop" in engines:
            row["per_round"]["loop_decode_tps"] = [round(r["loop"].decode_tps, 1) for r in rounds]
    return row


def loop_figures(rounds: list[dict[str, Run]], first_rounds: list[dict[str, Run]]) -> dict[str, Any]:
    """``--compare-loop``: the Python-loop engine's figures against raw and against our default engine."""
    loop_ratio = median_ci([r["loop"].decode_tps / r["raw"].decode_tps for r in rounds])
    over_loop = median_ci([r["ours"].decode_tps / r["loop"].decode_tps for r in rounds])
    loop_overhead = median_ci([1000 * (r["loop"].ttft - r["raw"].ttft) for r in first_rounds])
    loop_tps = statistics.median(r["loop"].decode_tps for r in rounds)
    return {
        "loop_decode_tps": loop_tps,
        "loop_ratio": loop_tps / statistics.median(r["raw"].decode_tps for r in rounds),
        "loop_ttft_ms": 1000 * statistics.median(r["loop"].ttft for r in first_rounds),
        "loop_same_tokens": all(r["loop"].tokens == r["raw"].tokens for r in rounds),
        "paired_loop_ratio": loop_ratio[0], "paired_loop_ratio_ci95": [loop_ratio[1], loop_ratio[2]],
        "paired_ours_over_loop": over_loop[0], "paired_ours_over_loop_ci95": [over_loop[1], over_loop[2]],
        "paired_loop_ttft_overhead_ms": loop_overhead[0],
        "paired_loop_ttft_overhead_ci95_ms": [loop_overhead[1], loop_overhead[2]],
    }


# -- peak RSS of loading, in a child process -----------------------------------------------------------------

_PROBE = """
import json, sys
args = json.loads(sys.argv[1])
import benchmarks.edge as edge
print(json.dumps(edge.load_rss(**args)))
"""


def load_rss(side: str, name: str, bundle: str, public_key: str, threads: int, context: int,
             onnx_decoder: str = EngineOptions.onnx_decoder) -> dict[str, float]:
    """Peak RSS growth (MiB) and seconds of loading one model, libraries imported beforehand. Reads the kernel's
    own high-water mark (VmHWM, reset first through clear_refs), so short-lived load-time buffers count."""
    import llama_cpp  # noqa: F401
    import onnxruntime  # noqa: F401

    from edge_runtime.bundle import load_public_key

    folder = Path(bundle)
    if name.startswith("onnx"):
        import onnxruntime_genai  # noqa: F401
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    started = time.perf_counter()
    if side == "ours":
        options = EngineOptions(context_length=context, threads=threads, lazy=False, onnx_decoder=onnx_decoder)
        load_bundle(folder, trusted_keys=[load_public_key(public_key)], options=options)
    elif name.startswith("gguf"):
        RawLlamaCpp(folder / json.loads((folder / "manifest.json").read_text())["model_file"], threads, context)
    else:
        RawGenai(genai_folder(folder, threads, context), folder / "tokenizer.json")
    seconds = time.perf_counter() - started
    return {"load_rss_mib": (_status_kib("VmHWM") - before) / 1024, "load_s": seconds}


def _status_kib(field: str) -> int:
    """A kB figure of /proc/self/status (Linux). ru_maxrss would not do in a child: it keeps the forking
    parent's peak across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_rss(name: str, bundle: Path, threads: int, context: int, onnx_decoder: str) -> dict[str, float]:
    row = {}
    for side in ("ours", "raw"):
        args = {"side": side, "name": name, "bundle": str(bundle), "threads": threads, "context": context,
                "onnx_decoder": onnx_decoder,
                "public_key": str(bundle.parent / f"{KEY_PREFIX}.pub")}
        done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True,
                              check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        prefix = "" if side == "ours" else "raw_"
        row |= {prefix + key: value for key, value in result.items()}
    return row


# -- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tandem" / "benchmarks")
    parser.add_argument("--rounds", type=int, default=None, help="decode rounds per backend (default 25, quick 2)")
    parser.add_argument("--ttft-rounds", type=int, default=None,
                        help="extra one-token rounds per backend for TTFT (default 80, quick 4)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both sides (default 2)")
    parser.add_argument("--batch-threads", type=int, default=None,
                        help="prefill threads for both sides' llama.cpp (default: --threads)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="prompt length incl. BOS (default 128)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 128)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, 32-token prompt, 16 new tokens")
    parser.add_argument("--only", action="append", choices=[f"{f} {q}" for f, q in BACKENDS],
                        help="measure only this backend (repeatable; default all four)")
    parser.add_argument("--per-round", action="store_true", help="add every round's figures to the JSON")
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS-of-loading probes")
    parser.add_argument("--onnx-decoder", choices=ONNX_DECODERS, default=EngineOptions().onnx_decoder,
                        help="our ONNX engine's decoder (EngineOptions.onnx_decoder; default: its default)")
    parser.add_argument("--compare-loop", action="store_true",
                        help="ONNX backends: also run our engine with the Python loop in every round")
    options = parser.parse_args()
    prompt_tokens = options.prompt_tokens or (32 if options.quick else 128)
    new_tokens = options.new_tokens or (16 if options.quick else 128)
    settings = Settings(
        rounds=options.rounds or (2 if options.quick else 25),
        ttft_rounds=options.ttft_rounds if options.ttft_rounds is not None else (4 if options.quick else TTFT_ROUNDS),
        new_tokens=new_tokens, threads=options.threads, context=max(512, prompt_tokens + new_tokens),
        per_round=options.per_round, batch_threads=options.batch_threads, onnx_decoder=options.onnx_decoder,
        compare_loop=options.compare_loop,
    )
    console = Console(stderr=True)
    options.cache.mkdir(parents=True, exist_ok=True)

    from tokenizers import Tokenizer

    bundles, public_key, model = prepare_bundles(options.cache, lambda line: console.print(line))
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    manifest = json.loads((bundles["gguf q8_0"] / "manifest.json").read_text())
    results: dict[str, Any] = {
        "model": {
            "name": "bench-llama (random weights)", "parameters": manifest["parameters"],
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "threads": settings.threads,
            "batch_threads": settings.batch_threads or settings.threads,
            "rounds": settings.rounds, "ttft_rounds": settings.ttft_rounds, "context_length": settings.context,
            "onnx_decoder": settings.onnx_decoder, "compare_loop": settings.compare_loop,
        },
        "backends": {},
    }
    started = time.perf_counter()
    for name, bundle in bundles.items():
        if options.only and name not in options.only:
            continue
        console.print(f"measuring {name} ...")
        prompts = make_prompts(tokenizer, prompt_tokens)
        # made before the rounds start (making one takes a few ms of CPU); more only for rounds measured again
        prompts = itertools.chain(list(itertools.islice(prompts, settings.rounds + settings.ttft_rounds + 2)), prompts)
        row = bench_backend(name, bundle, public_key, prompts, settings, lambda line: console.print(line))
        if not options.skip_rss:
            row |= measure_rss(name, bundle, settings.threads, settings.context, settings.onnx_decoder)
        results["backends"][name] = row
    results["model"]["seconds"] = time.perf_counter() - started
    backends = results["backends"]
    results["runtime_comparison"] = {
        level: {
            "llama.cpp_decode_tps": backends[gguf]["decode_tps"],
            "onnxruntime_decode_tps": backends[onnx]["decode_tps"],
            "llama.cpp_over_onnxruntime": backends[gguf]["decode_tps"] / backends[onnx]["decode_tps"],
            "llama.cpp_prefill_tps": backends[gguf]["prefill_tps"],
            "onnxruntime_prefill_tps": backends[onnx]["prefill_tps"],
            "llama.cpp_ttft_ms": backends[gguf]["ttft_ms"],
            "onnxruntime_ttft_ms": backends[onnx]["ttft_ms"],
        }
        for level, (gguf, onnx) in LEVELS.items()
        if gguf in backends and onnx in backends
    }
    met = all(r["ratio"] >= GOAL_RATIO and r["ttft_overhead_ms"] <= GOAL_TTFT_MS for r in backends.values())
    paired_met = all(
        r["paired_ratio"] >= GOAL_RATIO and r["paired_ttft_overhead_ms"] <= GOAL_TTFT_MS for r in backends.values()
    )
    layer_met = all(
        r["paired_ratio"] >= GOAL_RATIO and r["paired_ttft_outside_prefill_ms"] <= GOAL_TTFT_MS
        for r in backends.values()
    )
    results["goals"] = {
        "ratio_min": GOAL_RATIO, "ttft_overhead_max_ms": GOAL_TTFT_MS, "met": met, "paired_met": paired_met,
        "paired_met_outside_prefill_call": layer_met,
    }
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print_tables(results)


def print_tables(results: dict[str, Any]) -> None:
    console, model = Console(), results["model"]
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title=(
        f"ours vs raw: {model['parameters']:,}-parameter model, {model['prompt_tokens']}-token prompt, "
        f"{model['new_tokens']} new tokens, {model['threads']} threads; medians of {model['rounds']} decode rounds, "
        f"TTFT also over {model['ttft_rounds']} one-token rounds"
    ))
    columns = ("backend", "decode tok/s", "raw", "ours/raw", "paired [95 % CI]", "prefill tok/s", "raw", "TTFT ms",
               "raw", "overhead ms", "paired [95 % CI]", "outside prefill call", "same tokens", "load RSS MiB",
               "raw")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in results["backends"].items():
        rss = [f"{row[key]:.0f}" if key in row else "-" for key in ("load_rss_mib", "raw_load_rss_mib")]
        low, high = row["paired_ratio_ci95"]
        low_ms, high_ms = row["paired_ttft_overhead_ci95_ms"]
        out_low, out_high = row["paired_ttft_outside_prefill_ci95_ms"]
        table.add_row(
            name, f"{row['decode_tps']:.1f}", f"{row['raw_decode_tps']:.1f}", f"{row['ratio']:.3f}",
            f"{row['paired_ratio']:.3f} [{low:.3f}, {high:.3f}]", f"{row['prefill_tps']:.0f}",
            f"{row['raw_prefill_tps']:.0f}", f"{row['ttft_ms']:.1f}", f"{row['raw_ttft_ms']:.1f}",
            f"{row['ttft_overhead_ms']:+.2f}", f"{row['paired_ttft_overhead_ms']:+.2f} [{low_ms:+.1f}, {high_ms:+.1f}]",
            f"{row['paired_ttft_outside_prefill_ms']:+.2f} [{out_low:+.2f}, {out_high:+.2f}]",
            "yes" if row["same_tokens"] else "no", *rss,
        )
    console.print(table)
    looped = {name: row for name, row in results["backends"].items() if "loop_decode_tps" in row}
    if looped:
        table = Table(title="ONNX: our engine on onnxruntime-genai's generator vs on our Python loop, same rounds")
        for column in ("backend", "decode tok/s genai / loop", "loop / raw", "paired [95 % CI]",
                       "genai / loop paired [95 % CI]", "loop TTFT overhead ms (paired)"):
            table.add_column(column, justify="right")
        for name, row in looped.items():
            low, high = row["paired_loop_ratio_ci95"]
            over_low, over_high = row["paired_ours_over_loop_ci95"]
            table.add_row(
                name, f"{row['decode_tps']:.1f} / {row['loop_decode_tps']:.1f}", f"{row['loop_ratio']:.3f}",
                f"{row['paired_loop_ratio']:.3f} [{low:.3f}, {high:.3f}]",
                f"{row['paired_ours_over_loop']:.3f} [{over_low:.3f}, {over_high:.3f}]",
                f"{row['paired_loop_ttft_overhead_ms']:+.2f}",
            )
        console.print(table)
    table = Table(title="llama.cpp vs ONNX Runtime, both through our engine")
    for column in ("level", "llama.cpp decode tok/s", "ONNX Runtime decode tok/s", "llama.cpp / ORT",
                   "llama.cpp prefill tok/s", "ORT prefill tok/s", "llama.cpp TTFT ms", "ORT TTFT ms"):
        table.add_column(column, justify="right")
    for level, row in results["runtime_comparison"].items():
        table.add_row(
            f"{level} ({' vs '.join(LEVELS[level])})", f"{row['llama.cpp_decode_tps']:.1f}",
            f"{row['onnxruntime_decode_tps']:.1f}", f"{row['llama.cpp_over_onnxruntime']:.2f}",
            f"{row['llama.cpp_prefill_tps']:.0f}", f"{row['onnxruntime_prefill_tps']:.0f}",
            f"{row['llama.cpp_ttft_ms']:.1f}", f"{row['onnxruntime_ttft_ms']:.1f}",
        )
    console.print(table)
    goals = results["goals"]
    console.print(
        f"Goals (decode ours/raw >= {goals['ratio_min']} and TTFT overhead <= {goals['ttft_overhead_max_ms']} ms "
        f"on every backend): {'met' if goals['met'] else 'NOT met'} (on the paired figures: "
        f"{'met' if goals['paired_met'] else 'not met'}; with TTFT taken outside the prompt call: "
        f"{'met' if goals['paired_met_outside_prefill_call'] else 'not met'}). Whole run: {model['seconds']:.0f} s."
    )


if __name__ == "__main__":
    main()
