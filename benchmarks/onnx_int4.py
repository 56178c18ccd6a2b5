"""ONNX INT4 candidates on one model: size vs F16, perplexity change on held-out text, time, decode speed.

    python -m benchmarks.onnx_int4 --model DIR --eval-data FILE [--only NAME ...] [--json] [--report FILE]

The model is exported to FP32 ONNX once (optimum-onnx, as `tandem export onnx` does); each candidate then runs
the export's own INT4 step (``export.onnx.quantize.quantize_int4``) on a copy and is scored on the quality gate's
windows (``--eval-data`` cut as the CLI cuts it: 256-token windows, at most 32) against the transformers model.
``bytes`` are the quantized graph's initializers (the manifest's ``weight_bytes``), ``x F16`` their ratio to 2 bytes
x parameters (tied embedding once), ``file x F16`` that of model.onnx on disk (weights + graph); the size budget
(0.36 x, on the file) and the quality gate (+10 %) decide ``fits`` and ``passes``. ``quantize s`` is the
INT4 step alone; ``decode tok/s`` the median of 3 greedy runs of 32 tokens after a 128-token prompt on 2 threads
(informative: on a shared machine it moves with other processes' load).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES: dict[str, dict[str, Any]] = {
    "previous default (rtn, integer zp, head 4, fp32 scales, acc unset)": {
        "head_bits": 4, "zero_points": "integer", "scale_type": "float32", "accuracy_level": None,
    },
    "rtn, integer zp, fp32 scales": {"zero_points": "integer", "scale_type": "float32"},
    "rtn, integer zp": {"zero_points": "integer"},
    "k_quant (integer zp)": {"algorithm": "k_quant"},
    "hqq (float zp)": {"algorithm": "hqq"},
    "rtn, float zp, fp32 scales": {"zero_points": "float", "scale_type": "float32"},
    "rtn, float zp": {"zero_points": "float"},
    "rtn, offset zp, head 4": {"head_bits": 4},
    "rtn, offset zp, block 64": {"block_size": 64},
    "rtn, offset zp, head block 32": {"head_block_size": 32},
    "rtn, offset zp, acc unset": {"accuracy_level": None},
    "default (rtn, offset zp, head 8 block 64, fp16 scales, acc 4)": {},
}
"""Setting -> Int4Options fields; fields not named keep their defaults (block 32, head_bits 8 in blocks of 64,
float16 scales, accuracy_level 4, rtn with offset zero points)."""
SIZE_BUDGET = 0.36
QUALITY_GATE_PCT = 10.0


def _decode_speed(runner: Any, prompt: list[int], tokens: int = 32, runs: int = 3) -> float:
    speeds = []
    for _ in range(runs):
        past = runner.signature.empty_past()
        logits, past = runner._step(prompt, past, 0)
        token, length = int(logits[-1].argmax()), len(prompt)
        started = time.perf_counter()
        for index in range(tokens):
            logits, past = runner._step([token], past, length + index)
            token = int(logits[-1].argmax())
        speeds.append(tokens / (time.perf_counter() - started))
    return statistics.median(speeds)


def measure(model_dir: Path, eval_data: Path, only: list[str] | None = None) -> dict[str, Any]:
    import onnx

    from export.cli_support import load_evaluation
    from export.onnx import graph
    from export.onnx.convert import export_fp32, name_weights
    from export.onnx.options import Int4Options
    from export.onnx.quantize import quantize_int4
    from export.onnx.runner import OnnxRunner
    from export.quality import hf_window_nll, perplexity
    from export.source import SourceModel

    names = [name for name in CANDIDATES if not only or any(part in name for part in only)]
    source = SourceModel.open(model_dir)
    evaluation = load_evaluation(eval_data, QUALITY_GATE_PCT, "int4")
    assert evaluation is not None
    windows = evaluation.windows(source.load_tokenizer(), source.context_length)
    model = source.load_model()
    started = time.perf_counter()
    reference = perplexity(windows, hf_window_nll(model))
    f16_bytes = 2 * source.parameter_count()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="onnx-int4-bench-") as work:
        raw = export_fp32(model, Path(work) / "export")
        del model
        fp32 = graph.load(raw)
        name_weights(fp32)
        export_seconds = time.perf_counter() - started
        for name in names:
            options = Int4Options(**CANDIDATES[name])
            copy = onnx.ModelProto()
            copy.CopyFrom(fp32)
            started = time.perf_counter()
            quantized = quantize_int4(copy, options)
            quantize_seconds = time.perf_counter() - started
            folder = Path(work) / "int4"
            folder.mkdir(exist_ok=True)
            graph.save(quantized, folder / "model.onnx")
            runner = OnnxRunner(folder, threads=2)
            started = time.perf_counter()
            result = perplexity(windows, runner.window_nll())
            eval_seconds = time.perf_counter() - started
            weight_bytes = graph.weight_bytes(quantized)
            file_bytes = sum(path.stat().st_size for path in folder.iterdir())
            rows[name] = {
                "options": options.as_dict(),
                "bytes": weight_bytes,
                "x_f16": weight_bytes / f16_bytes,
                "file_bytes": file_bytes,
                "file_x_f16": file_bytes / f16_bytes,
                "perplexity": result.value,
                "delta_pct": 100.0 * (result.value - reference.value) / reference.value,
                "quantize_seconds": quantize_seconds,
                "eval_seconds": eval_seconds,
                "decode_tokens_per_second": _decode_speed(runner, windows[0][:128]),
            }
            del runner, quantized, copy
            for path in folder.iterdir():
                path.unlink()
            print(_line(name, rows[name]), flush=True)
    return {
        "model": str(model_dir),
        "parameters": source.parameter_count(),
        "f16_bytes": f16_bytes,
        "source_perplexity": reference.value,
        "tokens": reference.tokens,
        "windows": len(windows),
        "fp32_export_seconds": export_seconds,
        "rows": rows,
    }


def _line(name: str, row: dict[str, Any]) -> str:
    return (f"{name}: {row['bytes']:,} bytes, {row['x_f16']:.3f} x F16, ppl {row['perplexity']:.3f} "
            f"({row['delta_pct']:+.2f} %), {row['quantize_seconds']:.1f} s, "
            f"{row['decode_tokens_per_second']:.1f} tok/s")


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Model `{result['model']}`: {result['parameters']:,} parameters, F16 {result['f16_bytes']:,} bytes; source "
        f"perplexity {result['source_perplexity']:.3f} on {result['windows']} windows ({result['tokens']} tokens). "
        f"Budget <= {SIZE_BUDGET} x F16, gate <= +{QUALITY_GATE_PCT:g} %.",
        "",
        "| setting | bytes | x F16 | file x F16 | perplexity | delta % | quantize s | decode tok/s | fits | passes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in result["rows"].items():
        fits = "yes" if row["file_x_f16"] <= SIZE_BUDGET else "no"
        passes = "yes" if row["delta_pct"] <= QUALITY_GATE_PCT else "no"
        lines.append(
            f"| {name} | {row['bytes']:,} | {row['x_f16']:.3f} | {row['file_x_f16']:.3f} | {row['perplexity']:.3f} | "
            f"{row['delta_pct']:+.2f} | "
            f"{row['quantize_seconds']:.1f} | {row['decode_tokens_per_second']:.1f} | "
            f"{fits} | {passes} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_int4", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model folder")
    parser.add_argument("--eval-data", type=Path, required=True, help="held-out text (.txt or .jsonl)")
    parser.add_argument("--only", action="append", help="run the settings whose name contains this (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--report", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    result = measure(args.model, args.eval_data, args.only)
    table = markdown(result)
    if args.report:
        args.report.write_text(table)
    print(json.dumps(result, indent=2) if args.json else table)
    if not math.isfinite(result["source_perplexity"]):
        raise SystemExit("the source model's perplexity is not finite")


if __name__ == "__main__":
    main()
