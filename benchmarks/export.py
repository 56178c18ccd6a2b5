"""What each export artifact costs and keeps: size vs F16, perplexity change, export time, bits per weight.

    python -m benchmarks.export [--json] [--skip-bench] [--cache DIR]

Two models:
- ``bench``: the ~100M-parameter benchmark model (random weights): sizes and times are what matter there.
- ``trained``: a small Llama trained for a few hundred steps on the toy corpus (through `tandem export
  distill` with the KL term off, i.e. plain next-token training), so perplexity changes mean something.

Every artifact is a real signed bundle built by the same functions as `tandem export gguf|onnx`, with the
quality gate opened wide (measuring, not gating). ``size_ratio_vs_f16`` is the model file(s) on disk over
an F16 copy of the weights (2 bytes x parameters). Goals (export issue): per runtime one INT4 artifact
<= 0.36 x F16 on the bench model; on the trained model INT8 perplexity delta <= 1 %, INT4 <= 10 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from export.quality import Evaluation, QualityGate
from export.source import SourceModel
from export.toy_models import ToyModelSpec, cached_toy_model
from export.toy_models.corpus import corpus_lines

ARTIFACTS = [("gguf", q) for q in ("f16", "q8_0", "q4_0", "q4_k_m")] + [("onnx", q) for q in ("fp32", "int8", "int4")]
TRAINED_SPEC = ToyModelSpec(
    arch="llama", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=768,
    vocab_size=2048, max_position_embeddings=512, init_std=0.02, corpus_lines=6000, seed=0,
)
MEASURE_ONLY = QualityGate(1e6)


def trained_model(cache: Path) -> Path:
    """The trained toy model, built and trained once per cache folder."""
    from export.distill import DistillConfig, StudentSpec, distill

    out = cache / "trained-llama-h256"
    if out.is_dir():
        return out
    data = cache / "trained-corpus.txt"
    data.write_text("\n".join(corpus_lines(6000, seed=0)))
    teacher = cached_toy_model(TRAINED_SPEC, cache)
    distill(DistillConfig(
        teacher=teacher, data=data, out=out, student=StudentSpec(), steps=400, seq_len=128, batch_size=8,
        lr=3e-3, alpha_kl=0.0, alpha_ce=1.0, warmup_steps=20, eval_max_windows=8, checkpoint_every=0,
    ))
    return out


def measure(source: SourceModel, evaluation: Evaluation, work: Path) -> dict[str, dict[str, float]]:
    from export.gguf.pipeline import build_gguf_bundle
    from export.onnx.bundle import build_onnx_bundle

    key = Ed25519PrivateKey.generate()
    f16_bytes = 2 * source.parameter_count()
    rows = {}
    for fmt, quantization in ARTIFACTS:
        build = build_gguf_bundle if fmt == "gguf" else build_onnx_bundle
        started = time.perf_counter()
        bundle = build(source, work / f"{fmt}-{quantization}", quantization, key, evaluation=evaluation)
        seconds = time.perf_counter() - started
        manifest = bundle.manifest
        model_bytes = sum(entry.size for name, entry in manifest.files.items() if name.startswith("model."))
        rows[f"{fmt} {quantization}"] = {
            "size_bytes": model_bytes,
            "size_ratio_vs_f16": model_bytes / f16_bytes,
            "ppl_delta_pct": bundle.gate.delta_pct,
            "export_seconds": seconds,
            "bits_per_weight": 8 * manifest.memory.weight_bytes / source.parameter_count(),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--skip-bench", action="store_true", help="only the trained toy model")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tandem" / "benchmarks")
    options = parser.parse_args()
    options.cache.mkdir(parents=True, exist_ok=True)
    held_out = "\n".join(corpus_lines(400, seed=4242))

    models = {"trained": (trained_model(options.cache), Evaluation(held_out, MEASURE_ONLY, 128, 16))}
    if not options.skip_bench:
        bench = cached_toy_model(ToyModelSpec.bench("llama"), options.cache)
        models["bench"] = (bench, Evaluation(held_out, MEASURE_ONLY, 128, 4))
    results = {}
    for name, (folder, evaluation) in models.items():
        with tempfile.TemporaryDirectory() as work:
            source = SourceModel.open(folder)
            artifacts = measure(source, evaluation, Path(work))
            results[name] = {"parameters": source.parameter_count(), "artifacts": artifacts}
    if options.json:
        print(json.dumps(results, indent=2))
        return
    for name, result in results.items():
        table = Table(title=f"{name} model ({result['parameters']:,} parameters)")
        for column in ("artifact", "size", "x F16", "ppl change", "bits/weight", "export"):
            table.add_column(column, justify="right")
        for artifact, row in result["artifacts"].items():
            table.add_row(
                artifact, f"{row['size_bytes']:,}", f"{row['size_ratio_vs_f16']:.3f}", f"{row['ppl_delta_pct']:+.2f} %",
                f"{row['bits_per_weight']:.2f}", f"{row['export_seconds']:.1f} s",
            )
        Console().print(table)


if __name__ == "__main__":
    main()
