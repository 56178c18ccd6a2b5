"""ONNX INT8 candidates on the real pretrained model: where dynamic INT8 loses quality, and what keeps it.

    python -m benchmarks.onnx_int8 [--model DIR] [--only NAME ...] [--activations] [--rounds N] [--threads N]
                                   [--engine] [--json] [--report FILE]

The model (default: SmolLM2-135M-Instruct, export.pretrained) is exported to FP32 ONNX once (optimum-onnx, as
`tandem export onnx` does, the tied LM head still a second copy as ONNX Runtime's quantizers see it); each
candidate then quantizes a copy and is scored on the quality gate's windows (export.pretrained.reference_text,
16 windows x 256 tokens, as `python -m benchmarks.export_real` cuts them) against the transformers model in
float32: perplexity change, mean KL(source || candidate) in nats, top-1 agreement. ``x F16`` is the quantized
graph's initializers (the manifest's ``weight_bytes``) over 2 bytes x parameters (tied embedding once).

Speed: a 128-token prompt step, then greedy steps of one token, through ONNX Runtime on ``--threads`` threads (the
edge runtime's loop: ``export.onnx.runner.OnnxRunner``), ``--rounds`` rounds of 64 tokens, each round timing the
candidate and the previous default (dynamic INT8) back to back, the side that goes first alternating. ``decode
tok/s`` and ``prefill tok/s`` are the candidate's medians (the previous default's, from the same rounds, in
brackets); ``paired`` the median of the per-round ratios of seconds, previous / candidate (above 1: faster).
``--engine`` instead times the previous INT8, today's INT8 and INT4 as signed bundles on the edge runtime's
engine (``engine_speed``).

Candidates:

- ``dynamic ...``: ONNX Runtime's ``quantize_dynamic`` (MatMulInteger: int8 weights per output channel, uint8
  activations quantized per tensor on the fly), the previous default and variants of it; ``float <names>``
  leaves those MatMuls in float32, ``only <names>`` quantizes those alone.
- ``fake ...`` (diagnostics, float32 graphs of the same size as FP32): ``fake weights`` replaces every weight by
  its per-channel 7-bit int8 round trip (the dynamic quantizer's weights, float activations); ``fake
  activations`` quantizes every MatMul input per tensor to uint8 and back (DynamicQuantizeLinear +
  DequantizeLinear, the dynamic quantizer's activations, float weights).
- ``nbits ...``: weight-only blocks (MatMulNBits) through ``export.onnx.quantize.quantize_int8`` with the given
  ``Int8Options``; ``default`` is today's ``Int8Options()``.

``--activations`` adds the diagnosis on the transformers model: for each kind of linear layer, the relative RMS
error its output takes when its input is quantized like ONNX Runtime's dynamic INT8 (uint8 per tensor, over a
256-token window or one token) or like MatMulNBits at accuracy_level 4 (int8 per token and block of 32), and how
far the largest input channel stands above the typical one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EVAL_CHARS = 200_000
PROMPT_TOKENS = 128

KINDS = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
    "head": ("lm_head",),
}
"""Kinds of MatMul, by the name of the layer that reads the weight."""

PREVIOUS = "dynamic, per channel, 7-bit weights (previous default)"


def _dynamic(per_channel: bool = True, reduce_range: bool = True, skip: tuple[str, ...] = (),
             only: tuple[str, ...] = ()) -> Callable[..., None]:
    def run(fp32: Any, fp32_file: Path, out_file: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from export.onnx.quiet import quiet_libraries

        names = _matmuls_by_kind(fp32)
        exclude = [name for kind in skip for name in names[kind]]
        if only:
            exclude = [name for kind, nodes in names.items() if kind not in only for name in nodes]
        with quiet_libraries():
            quantize_dynamic(
                fp32_file, out_file, op_types_to_quantize=["MatMul", "Gather"], per_channel=per_channel,
                reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                extra_options={"MatMulConstBOnly": True},
            )
    return run


def _matmuls_by_kind(model: Any) -> dict[str, list[str]]:
    inits = {t.name for t in model.graph.initializer}
    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        for kind, layers in KINDS.items():
            if any(f"{layer}." in node.input[1] or node.input[1].startswith(layer) for layer in layers):
                kinds[kind].append(node.name)
    return kinds


def _fake_weights(fp32: Any, fp32_file: Path, out_file: Path) -> None:
    """Every MatMul weight through the dynamic quantizer's int8 (symmetric per output channel, [-64, 64]) and back,
    the embedding per tensor; activations untouched."""
    import onnx
    from onnx import numpy_helper

    from export.onnx import graph

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            tensor = inits[node.input[1]]
            weight = numpy_helper.to_array(tensor).astype(np.float64)
            scale = np.abs(weight).max(axis=0, keepdims=True) / 64.0
            scale[scale == 0] = 1.0
            tensor.CopyFrom(numpy_helper.from_array(
                (np.clip(np.round(weight / scale), -64, 64) * scale).astype(np.float32), tensor.name
            ))
        elif node.op_type == "Gather" and node.input[0] in inits:
            tensor = inits[node.input[0]]
            table = numpy_helper.to_array(tensor).astype(np.float64)
            low, high = min(table.min(), 0.0), max(table.max(), 0.0)
            scale = (high - low) / 255.0
            zero = np.round(-low / scale)
            back = (np.clip(np.round(table / scale) + zero, 0, 255) - zero) * scale
            tensor.CopyFrom(numpy_helper.from_array(back.astype(np.float32), tensor.name))
    graph.save(model, out_file)


def _fake_activations(fp32: Any, fp32_file: Path, out_file: Path) -> None:
    """Every MatMul with a constant weight reads its input through DynamicQuantizeLinear + DequantizeLinear:
    uint8 per tensor over the step's tokens, as MatMulInteger gets it; weights untouched."""
    import onnx
    from onnx import helper

    from export.onnx import graph

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    inits = {t.name for t in model.graph.initializer}
    nodes = []
    done: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            source = node.input[0]
            if source not in done:
                q, s, z, back = (f"{source}/fakeq/{part}" for part in ("q", "s", "z", "back"))
                nodes.append(helper.make_node("DynamicQuantizeLinear", [source], [q, s, z], name=f"{source}/dql"))
                nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [back], name=f"{source}/dq"))
                done[source] = back
            node.input[0] = done[source]
        nodes.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    graph.save(model, out_file)


def _nbits(**fields: Any) -> Callable[..., None]:
    def run(fp32: Any, fp32_file: Path, out_file: Path) -> None:
        from export.onnx.options import Int8Options
        from export.onnx.quantize import quantize_int8

        quantize_int8(fp32_file, out_file, Int8Options(**fields))
    return run


def _int4(fp32: Any, fp32_file: Path, out_file: Path) -> None:
    import onnx

    from export.onnx import graph
    from export.onnx.options import Int4Options
    from export.onnx.quantize import quantize_int4

    copy = onnx.ModelProto()
    copy.CopyFrom(fp32)
    graph.save(quantize_int4(copy, Int4Options()), out_file)


CANDIDATES: dict[str, Callable[..., None]] = {
    PREVIOUS: _dynamic(),
    "dynamic, per channel, 8-bit weights": _dynamic(reduce_range=False),
    "dynamic, per tensor, 7-bit weights": _dynamic(per_channel=False),
    "fake weights (7-bit per channel, float activations)": _fake_weights,
    "fake activations (uint8 per tensor, float weights)": _fake_activations,
    **{f"dynamic, only {kind}": _dynamic(only=(kind,)) for kind in KINDS},
    "dynamic, float down": _dynamic(skip=("down",)),
    "dynamic, float down + head": _dynamic(skip=("down", "head")),
    "nbits 8-bit block 32": _nbits(block_size=32),
    "nbits 8-bit block 64": _nbits(block_size=64),
    "nbits 8-bit block 128": _nbits(block_size=128),
    "nbits 8-bit block 32, float32 scales": _nbits(block_size=32, scale_type="float32"),
    "nbits 8-bit block 32, accuracy_level unset": _nbits(block_size=32, accuracy_level=None),
    "nbits 8-bit block 32, float embedding": _nbits(block_size=32, quantize_embeddings=False),
    "default": _nbits(),
    "int4 default (for reference)": _int4,
}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


def _score(windows: list[list[int]], source: list[np.ndarray], logits: Callable[[list[int]], np.ndarray]
           ) -> dict[str, float]:
    nll = kl = 0.0
    agree = count = 0
    for window, p in zip(windows, source, strict=True):
        n = len(window) - 1
        q = _log_softmax(logits(window)[:n])
        targets = np.asarray(window[1:])
        nll -= float(q[np.arange(n), targets].sum())
        kl += float((np.exp(p) * (p - q)).sum(dtype=np.float64))
        agree += int((p.argmax(axis=-1) == q.argmax(axis=-1)).sum())
        count += n
    return {"perplexity": math.exp(nll / count), "kl_divergence": kl / count, "top1_agreement": agree / count}


def _timed_decode(runner: Any, prompt: list[int], tokens: int) -> tuple[float, float]:
    """Seconds of the prompt's step and of ``tokens`` one-token steps after it."""
    past = runner.signature.empty_past()
    started = time.perf_counter()
    logits, past = runner._step(prompt, past, 0)
    prefill = time.perf_counter() - started
    token, length = int(logits[-1].argmax()), len(prompt)
    started = time.perf_counter()
    for index in range(tokens):
        logits, past = runner._step([token], past, length + index)
        token = int(logits[-1].argmax())
    return prefill, time.perf_counter() - started


def _paired_decode(candidate: Any, baseline: Any, prompt: list[int], rounds: int, tokens: int = 64
                   ) -> dict[str, float]:
    _timed_decode(candidate, prompt, 8)
    _timed_decode(baseline, prompt, 8)
    ours, theirs = [], []
    for index in range(rounds):
        if index % 2:
            b = _timed_decode(baseline, prompt, tokens)
            a = _timed_decode(candidate, prompt, tokens)
        else:
            a = _timed_decode(candidate, prompt, tokens)
            b = _timed_decode(baseline, prompt, tokens)
        ours.append(a)
        theirs.append(b)
    return {
        "decode_tokens_per_second": statistics.median(tokens / a[1] for a in ours),
        "baseline_decode_tokens_per_second": statistics.median(tokens / b[1] for b in theirs),
        "decode_vs_dynamic": statistics.median(b[1] / a[1] for a, b in zip(ours, theirs, strict=True)),
        "prefill_tokens_per_second": statistics.median(len(prompt) / a[0] for a in ours),
        "baseline_prefill_tokens_per_second": statistics.median(len(prompt) / b[0] for b in theirs),
        "prefill_vs_dynamic": statistics.median(b[0] / a[0] for a, b in zip(ours, theirs, strict=True)),
    }


def activation_report(model: Any, windows: list[list[int]], count: int = 4) -> dict[str, dict[str, float]]:
    """Per kind of linear layer: relative RMS output error of three activation quantizations, and the input's
    largest channel over its median channel (RMS over tokens)."""
    import torch

    sums: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}

    def per_tensor_uint8(x: torch.Tensor) -> torch.Tensor:  # DynamicQuantizeLinear over the whole tensor
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (high - low) / 255.0 or 1.0
        zero = round(-low / scale)
        return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale

    def per_block_int8(x: torch.Tensor, block: int = 32) -> torch.Tensor:  # MatMulNBits accuracy_level 4
        shape = x.shape
        blocks = x.reshape(*shape[:-1], shape[-1] // block, block)
        scale = blocks.abs().amax(dim=-1, keepdim=True) / 127.0
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        return (torch.round(blocks / scale) * scale).reshape(shape)

    def hook(kind: str) -> Callable[..., None]:
        def record(module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0][0].double()  # (tokens, in)
            weight = module.weight.double().T
            y = x @ weight
            norm = float(torch.linalg.norm(y))
            errors = {
                "per_tensor_window": per_tensor_uint8(x),
                "per_tensor_token": torch.stack([per_tensor_uint8(row) for row in x]),
                "per_block32_int8": per_block_int8(x),
            }
            entry = sums[kind]
            for name, quantized in errors.items():
                entry.setdefault(name, []).append(float(torch.linalg.norm(quantized @ weight - y)) / norm)
            channel_rms = x.pow(2).mean(dim=0).sqrt()
            entry.setdefault("outlier_ratio", []).append(float(channel_rms.max() / channel_rms.median()))
        return record

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            kind = next((k for k, layers in KINDS.items() if name.rsplit(".", 1)[-1] in layers), None)
            if kind:
                handles.append(module.register_forward_hook(hook(kind)))
    try:
        with torch.no_grad():
            for window in windows[:count]:
                model(torch.tensor([window]))
    finally:
        for handle in handles:
            handle.remove()
    return {kind: {name: statistics.mean(values) for name, values in entry.items()} for kind, entry in sums.items()}


def measure(model_dir: Path | None, only: list[str] | None, threads: int, rounds: int, activations: bool
            ) -> dict[str, Any]:

    from export.onnx import graph
    from export.onnx.convert import export_fp32, name_weights
    from export.onnx.runner import OnnxRunner
    from export.pretrained import ensure_pretrained, reference_text
    from export.quality import Evaluation, QualityGate, hf_logits
    from export.source import SourceModel

    model_dir = model_dir or ensure_pretrained().path
    names = [name for name in CANDIDATES if not only or name == PREVIOUS or any(part in name for part in only)]
    source = SourceModel.open(model_dir)
    evaluation = Evaluation(reference_text(EVAL_CHARS), QualityGate(1e6))
    windows = evaluation.windows(source.load_tokenizer(), source.context_length)
    model = source.load_model()
    reference = [_log_softmax(hf_logits(model, window)[: len(window) - 1]) for window in windows]
    targets_nll = sum(-float(p[np.arange(len(w) - 1), np.asarray(w[1:])].sum()) for p, w in zip(reference, windows,
                                                                                                  strict=True))
    count = sum(len(w) - 1 for w in windows)
    result: dict[str, Any] = {
        "model": str(model_dir), "parameters": source.parameter_count(), "f16_bytes": 2 * source.parameter_count(),
        "source_perplexity": math.exp(targets_nll / count), "tokens": count, "windows": len(windows),
        "threads": threads, "rows": {},
    }
    if activations:
        result["activations"] = activation_report(model, windows)
        print(json.dumps({"activations": result["activations"]}), flush=True)
    prompt = windows[0][:PROMPT_TOKENS]
    with tempfile.TemporaryDirectory(prefix="onnx-int8-bench-") as work_name:
        work = Path(work_name)
        raw = export_fp32(model, work / "export")
        del model
        fp32 = graph.load(raw)
        name_weights(fp32)
        for index, node in enumerate(fp32.graph.node):
            node.name = node.name or f"{node.op_type}_{index}"
        fp32_file = work / "fp32" / "model.onnx"
        fp32_file.parent.mkdir()
        graph.save(fp32, fp32_file)
        baseline = None
        for name in names:
            folder = work / f"candidate-{len(result['rows'])}"
            folder.mkdir()
            started = time.perf_counter()
            CANDIDATES[name](fp32, fp32_file, folder / "model.onnx")
            seconds = time.perf_counter() - started
            written = graph.load(folder / "model.onnx")
            runner = OnnxRunner(folder, threads=threads)
            row: dict[str, Any] = _score(windows, reference, runner.logits)
            row["delta_pct"] = 100.0 * (row["perplexity"] - result["source_perplexity"]) / result["source_perplexity"]
            row["weight_bytes"] = graph.weight_bytes(written)
            row["x_f16"] = row["weight_bytes"] / result["f16_bytes"]
            row["quantize_seconds"] = seconds
            row["ops"] = sorted({node.op_type for node in written.graph.node if node.domain == "com.microsoft"
                                 or node.op_type in ("MatMulInteger", "DynamicQuantizeLinear")})
            if name == PREVIOUS:
                baseline = runner  # the others are timed against it
            elif rounds and baseline is not None and not name.startswith("fake"):
                row |= _paired_decode(runner, baseline, prompt, rounds)
            result["rows"][name] = row
            print(_line(name, row), flush=True)
    return result


def engine_speed(model_dir: Path | None, threads: int, rounds: int, new_tokens: int = 128) -> dict[str, Any]:
    """The previous INT8 (dynamic), today's INT8 and INT4 as signed bundles (``build_onnx_bundle``, the previous
    one through a swapped quantize step) on the edge runtime's engine (``load_bundle`` + ``SyncEngine.generate``,
    its default ONNX decoder, greedy, ``ignore_eos``): one warm-up round, then ``rounds`` rounds that run each
    bundle once on the same 128-token prompt (another stretch of text each round, so that no KV cache is
    reused), in an order that reverses every round. TTFT: call to first token;
    decode tokens/s: tokens after the first over first to last token. Paired: median over rounds of the
    previous INT8's seconds over the bundle's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_runtime import EngineOptions, GenerationRequest, SamplingParams, SyncEngine, load_bundle
    from export.onnx import graph
    from export.onnx import quantize as quantize_module
    from export.onnx.bundle import build_onnx_bundle
    from export.pretrained import ensure_pretrained, reference_text
    from export.quality import Evaluation, QualityGate
    from export.source import SourceModel

    source = SourceModel.open(model_dir or ensure_pretrained().path)
    key = Ed25519PrivateKey.generate()
    evaluation = Evaluation(reference_text(20_000), QualityGate(1e6), 64, 1)  # building only: one short window
    tokenizer = source.load_tokenizer()
    text_ids = tokenizer.encode(reference_text(20_000), add_special_tokens=False)
    # Another stretch of text every round, so that no engine reuses the previous round's KV cache.
    prompts = [tokenizer.decode(text_ids[start:start + PROMPT_TOKENS])
               for start in range(0, (rounds + 1) * PROMPT_TOKENS, PROMPT_TOKENS)]

    def previous(fp32: Any, options: Any = None) -> Any:
        with tempfile.TemporaryDirectory(prefix="onnx-int8-previous-") as scratch_name:
            scratch = Path(scratch_name)
            graph.save(fp32, scratch / "fp32.onnx")
            CANDIDATES[PREVIOUS](fp32, scratch / "fp32.onnx", scratch / "model.onnx")
            return graph.load(scratch / "model.onnx")

    runs: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="onnx-int8-engine-") as work_name:
        work = Path(work_name)
        paths = {}
        for name, quantization in (("previous int8 (dynamic)", "int8"), ("int8", "int8"), ("int4", "int4")):
            original = quantize_module.quantize_int8_model
            if name.startswith("previous"):
                quantize_module.quantize_int8_model = previous
            try:
                paths[name] = build_onnx_bundle(source, work / name.split()[0], quantization, key,
                                                evaluation=evaluation).path
            finally:
                quantize_module.quantize_int8_model = original
        options = EngineOptions(threads=threads, lazy=False)
        engines = {name: SyncEngine(load_bundle(path, trusted_keys=[key.public_key()], options=options))
                   for name, path in paths.items()}
        sampling = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
        try:
            for index in range(rounds + 1):
                request = GenerationRequest(prompt=prompts[index], sampling=sampling)
                order = list(engines) if index % 2 == 0 else list(reversed(engines))
                for name in order:
                    started = time.perf_counter()
                    first = last = 0.0
                    count = 0
                    for event in engines[name].generate(request):
                        last = time.perf_counter()
                        if event.token_id is not None:
                            count += 1
                            first = first or last
                    assert count == new_tokens, (name, count)
                    if index:
                        runs.setdefault(name, []).append((first - started, (count - 1) / (last - first)))
        finally:
            for engine in engines.values():
                engine.close()
    baseline = runs["previous int8 (dynamic)"]
    return {name: {
        "ttft_ms": 1000 * statistics.median(ttft for ttft, _ in values),
        "decode_tokens_per_second": statistics.median(tps for _, tps in values),
        "decode_vs_dynamic": statistics.median(a[1] / b[1] for a, b in zip(values, baseline, strict=True)),
        "ttft_vs_dynamic": statistics.median(b[0] / a[0] for a, b in zip(values, baseline, strict=True)),
    } for name, values in runs.items()}


def _line(name: str, row: dict[str, Any]) -> str:
    speed = (f", decode {row['decode_tokens_per_second']:.1f} tok/s ({row['decode_vs_dynamic']:.2f} x dynamic), "
             f"prefill {row['prefill_tokens_per_second']:.0f} tok/s ({row['prefill_vs_dynamic']:.2f} x)"
             if "decode_tokens_per_second" in row else "")
    return (f"{name}: {row['x_f16']:.3f} x F16, ppl {row['perplexity']:.3f} ({row['delta_pct']:+.2f} %), "
            f"KL {row['kl_divergence']:.4f}, top-1 {100 * row['top1_agreement']:.1f} %{speed}")


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Model `{result['model']}`: {result['parameters']:,} parameters; source perplexity "
        f"{result['source_perplexity']:.3f} on {result['windows']} windows ({result['tokens']} tokens); decode on "
        f"{result['threads']} threads.",
        "",
        "| candidate | x F16 | perplexity | change | KL (nats) | top-1 | decode tok/s (dynamic) | paired | "
        "prefill tok/s (dynamic) | paired |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        speed = (f"{row['decode_tokens_per_second']:.1f} ({row['baseline_decode_tokens_per_second']:.1f}) | "
                 f"{row['decode_vs_dynamic']:.2f} x | {row['prefill_tokens_per_second']:.0f} "
                 f"({row['baseline_prefill_tokens_per_second']:.0f}) | {row['prefill_vs_dynamic']:.2f} x"
                 if "decode_tokens_per_second" in row else "- | - | - | -")
        lines.append(
            f"| {name} | {row['x_f16']:.3f} | {row['perplexity']:.3f} | {row['delta_pct']:+.2f} % | "
            f"{row['kl_divergence']:.4f} | {100 * row['top1_agreement']:.1f} % | {speed} |"
        )
    if "activations" in result:
        lines += [
            "",
            "Relative RMS error of each layer kind's output with its input quantized (mean over layers and 4 windows):",
            "",
            "| layer | uint8 per tensor, 256-token window | uint8 per tensor, one token | int8 per block of 32 | "
            "largest / median input channel |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, entry in result["activations"].items():
            lines.append(
                f"| {kind} | {100 * entry['per_tensor_window']:.2f} % | {100 * entry['per_tensor_token']:.2f} % | "
                f"{100 * entry['per_block32_int8']:.2f} % | {entry['outlier_ratio']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="Hugging Face model folder [default: SmolLM2-135M-Instruct]")
    parser.add_argument("--only", action="append", help="run the candidates whose name contains this (repeatable; "
                        "the previous default always runs, as the decode baseline)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads [default: 2]")
    parser.add_argument("--rounds", type=int, default=5, help="paired decode rounds (0: skip) [default: 5]")
    parser.add_argument("--activations", action="store_true", help="add the activation-quantization diagnosis")
    parser.add_argument("--engine", action="store_true", help="only time the previous INT8, today's INT8 and INT4 "
                        "as bundles on the edge runtime's engine")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--report", type=Path, help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)
    if args.engine:
        speeds = engine_speed(args.model, args.threads, args.rounds)
        if args.json:
            print(json.dumps(speeds, indent=2))
            return
        for name, row in speeds.items():
            print(f"{name}: decode {row['decode_tokens_per_second']:.1f} tok/s ({row['decode_vs_dynamic']:.2f} x "
                  f"dynamic, paired), TTFT {row['ttft_ms']:.0f} ms ({row['ttft_vs_dynamic']:.2f} x)")
        return
    result = measure(args.model, args.only, args.threads, args.rounds, args.activations)
    table = markdown(result)
    if args.report:
        args.report.write_text(table)
    print(json.dumps(result, indent=2) if args.json else table)


if __name__ == "__main__":
    main()
