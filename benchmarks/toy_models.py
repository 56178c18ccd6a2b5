"""How long the toy-model factory takes: cold builds per preset and cache hits.

    python -m benchmarks.toy_models [--json] [--skip-bench] [--rounds N]

Goal (the foundation issue): a tiny model builds "in a second or two". Library imports are warmed first and
reported apart, since every process pays them once whatever it builds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from export.safetensors_info import parameter_count
from export.toy_models import FAMILIES, ToyModelSpec, build_toy_model, cached_toy_model


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--skip-bench", action="store_true", help="skip the ~100M-parameter presets")
    parser.add_argument("--rounds", type=int, default=3, help="builds per tiny preset (median reported)")
    options = parser.parse_args()

    import_s = _seconds(lambda: (__import__("torch"), __import__("transformers")))
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        presets = [("tiny", ToyModelSpec.tiny)] + ([] if options.skip_bench else [("bench", ToyModelSpec.bench)])
        for size, make_spec in presets:
            for arch in sorted(FAMILIES):
                spec = make_spec(arch)
                rounds = options.rounds if size == "tiny" else 1
                builds = [
                    _seconds(lambda i=i, spec=spec: build_toy_model(spec, root / f"{spec.name}-{i}"))
                    for i in range(rounds)
                ]
                cached_toy_model(spec, root / "cache")
                hit = _seconds(lambda spec=spec: cached_toy_model(spec, root / "cache"))
                results[f"{size}-{arch}"] = {
                    "build_s": statistics.median(builds),
                    "cache_hit_ms": hit * 1e3,
                    "parameters": parameter_count(root / f"{spec.name}-0"),
                }
    if options.json:
        print(json.dumps({"import_s": import_s, "presets": results}, indent=2))
        return
    table = Table(title=f"toy-model factory (torch+transformers import: {import_s:.2f} s, paid once)")
    for column in ("preset", "parameters", "build (median)", "cache hit"):
        table.add_column(column, justify="right")
    for name, row in results.items():
        table.add_row(name, f"{row['parameters']:,.0f}", f"{row['build_s']:.2f} s", f"{row['cache_hit_ms']:.2f} ms")
    Console().print(table)


if __name__ == "__main__":
    main()
