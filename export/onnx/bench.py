"""The INT4 size measurement on the ~100M-parameter benchmark toy model (16k vocabulary, untied head).

    python -m export.onnx.bench [CACHE_DIR]      # prints one JSON object

The budget: the INT4 artifact's files at most 0.36x the bytes of an F16 copy of the source weights.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

INT4_SIZE_BUDGET = 0.36
"""INT4 artifact files / F16 weights."""


def measure_int4_size(
    cache_root: str | os.PathLike[str],
    *,
    arch: str = "llama",
    block_size: int = 32,
    symmetric: bool = False,
    eval_windows: int = 0,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build (or reuse) ``ToyModelSpec.bench(arch)`` under ``cache_root``, export it to INT4 and measure.

    With ``eval_windows`` > 0, also the perplexity of the source and of the artifact on that many held-out
    windows of 128 tokens. The artifact is written in ``work_dir`` (a temporary folder if None) and removed.
    """
    from export.onnx.options import Int4Options
    from export.onnx.pipeline import export_onnx
    from export.source import SourceModel
    from export.toy_models import ToyModelSpec, cached_toy_model

    started = time.perf_counter()
    folder = cached_toy_model(ToyModelSpec.bench(arch), cache_root)
    built = time.perf_counter()
    source = SourceModel.open(folder)
    with tempfile.TemporaryDirectory(dir=work_dir) as work:
        out = Path(work) / "int4"
        artifact = export_onnx(source, out, "int4", int4=Int4Options(block_size=block_size, symmetric=symmetric))
        exported = time.perf_counter()
        model_bytes = sum((out / name).stat().st_size for name in artifact.files if name.startswith("model.onnx"))
        result: dict[str, Any] = {
            "model": folder.name,
            "parameters": source.parameter_count(),
            "f16_bytes": artifact.f16_bytes,
            "int4_weight_bytes": artifact.weight_bytes,
            "int4_model_file_bytes": model_bytes,
            "ratio_weights_vs_f16": artifact.weight_bytes / artifact.f16_bytes,
            "ratio_files_vs_f16": model_bytes / artifact.f16_bytes,
            "budget": INT4_SIZE_BUDGET,
            "block_size": block_size,
            "symmetric": symmetric,
            "fp32_conversion_max_logit_diff": artifact.check.conversion_max_diff,
            "build_seconds": round(built - started, 1),
            "export_seconds": round(exported - built, 1),
        }
        if eval_windows:
            result |= _perplexities(source, out, eval_windows)
    return result


def _perplexities(source: Any, artifact_folder: Path, count: int) -> dict[str, float]:
    from export.onnx.runner import onnx_perplexity
    from export.quality import eval_windows, hf_window_nll, perplexity
    from export.toy_models.corpus import corpus_lines

    tokenizer = source.load_tokenizer()
    text = "\n".join(corpus_lines(40 * count, seed=20_250_101))  # not the tokenizer's training seed
    windows = eval_windows(tokenizer.encode(text), 128, count)
    reference = perplexity(windows, hf_window_nll(source.load_model())).value
    quantized = onnx_perplexity(artifact_folder, windows).value
    return {
        "source_perplexity": reference,
        "int4_perplexity": quantized,
        "perplexity_delta_pct": 100.0 * (quantized - reference) / reference,
    }


if __name__ == "__main__":
    cache = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tandem-toys-")
    print(json.dumps(measure_int4_size(cache, eval_windows=4), indent=2))
