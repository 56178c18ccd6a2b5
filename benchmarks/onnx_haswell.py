"""ONNX artifacts on an x86 CPU without VNNI (AVX2 only): do they compute what they compute here?

    python -m benchmarks.onnx_haswell [--cpu Haswell] [--tokens 24] [--json]

ONNX Runtime picks its integer kernels by CPU: with AVX-512 VNNI or AVX-VNNI the int8 dot products are exact,
on AVX2 alone some kernels add pairs of u8 x s8 products in int16 (``vpmaddubsw``), which saturates when both
factors are large (the dynamic INT8 MatMulInteger with full 8-bit weights decoded other tokens there; see
export.onnx.options.Int8Options). This runs the same artifacts natively and under ``qemu-x86_64 -cpu <cpu>``
(user-mode emulation: the CPUID ONNX Runtime reads is the emulated CPU's, so it takes that CPU's kernels):

1. Kernel: one 8-bit MatMulNBits (accuracy_level 4, the int8-activation kernel INT8 and INT4's 8-bit head use)
   on a worst case, every block's activations at their quantized maximum against weights at the far ends of the
   8-bit range (codes 0 and 255), and on random data, with float32 and float16 (the default) scales; the outputs
   against an exact float64 reference of the same quantized products, as a fraction of the largest output (a
   saturated int16 sum is off by a large fraction; float16 rounds to about 1e-3).
2. Models: the tiny toy Llama and Qwen2 (export.toy_models) as ``tandem export onnx`` writes them at int8 and
   int4 (today's defaults), and as a positive control the previous dynamic INT8 with full 8-bit weights
   (``reduce_range=False``): greedy tokens from a prompt with the KV cache, and the prompt's logits.

Emulation is slow (a tiny model's 24 tokens take about a minute); artifacts are built natively, once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ARCHS = ("llama", "qwen2")
CONTROL = "dynamic int8, 8-bit weights (control)"
K, N, BLOCK = 256, 64, 32


def _kernel_model(weight: np.ndarray) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])
    matmul = helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")
    graph = helper.make_graph([matmul], "kernel", [x], [y], [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def kernel_cases(folder: Path) -> dict[str, Any]:
    """Write the 8-bit MatMulNBits kernel cases (model files and inputs) into ``folder``; return their exact
    references."""
    import onnx

    from export.onnx.options import Int8Options
    from export.onnx.quantize import quantize_int8_model

    rng = np.random.default_rng(0)
    # Worst case: weights at the two ends of the 8-bit range (each block's first weight, -1, is its signed maximum:
    # code 0; the others +-0.99: codes 255 and 1) against activations at their block's maximum (127), all of one
    # sign or with the signs of one column's weights: whichever operand a kernel takes as unsigned, its int16
    # pair sums are as large as they get.
    weights = np.where(rng.random((K, N)) < 0.5, -0.99, 0.99).astype(np.float32)
    weights[0::BLOCK] = -1.0
    aligned = np.sign(weights[:, 0])
    worst_x = np.stack([np.ones(K), -np.ones(K), aligned, -aligned]).astype(np.float32)
    cases = {
        "worst case": (weights, worst_x),
        "random": (rng.standard_normal((K, N)).astype(np.float32),
                   (rng.standard_normal((8, K)) * np.where(rng.random(K) < 0.02, 30.0, 1.0)).astype(np.float32)),
    }
    references = {}
    for case, (weight, x) in cases.items():
        for scale_type in ("float32", "float16"):
            name = f"{case}, {scale_type} scales"
            options = Int8Options(block_size=BLOCK, scale_type=scale_type)
            model = quantize_int8_model(_kernel_model(weight), options)
            stem = name.replace(" ", "_").replace(",", "")
            onnx.save(model, str(folder / f"kernel_{stem}.onnx"))
            np.save(folder / f"kernel_{stem}_x.npy", x)
            # float16 (the default): the kernel computes in float16, so the reference is met within its rounding.
            references[name] = _exact(model, x.astype(scale_type).astype(np.float32))
    return references


def _exact(model: Any, x: np.ndarray) -> np.ndarray:
    """MatMulNBits at accuracy_level 4 in float64: int8 activations per row and block (scale = max |x| / 127)
    times the 8-bit weights (code - 128) per block, summed exactly."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    codes = next(v for k, v in inits.items() if k.endswith("_Q8")).astype(np.float64) - 128.0  # (N, blocks, B)
    scales = next(v for k, v in inits.items() if k.endswith("_scales")).astype(np.float64)  # (N, blocks)
    xb = x.astype(np.float64).reshape(len(x), -1, BLOCK)
    x_scale = np.abs(xb).max(axis=-1) / 127.0
    x_scale[x_scale == 0] = 1.0
    xq = np.round(xb / x_scale[..., None])
    products = np.einsum("rkb,nkb->rnk", xq, codes)  # (rows, N, blocks) integer sums
    return np.einsum("rnk,rk,nk->rn", products, x_scale, scales)


def build_artifacts(folder: Path) -> dict[str, dict[str, Any]]:
    """The toy artifacts, natively; returns name -> {path, prompt}."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from export.onnx import export_onnx
    from export.onnx.quiet import quiet_libraries
    from export.quality import CHECK_PROMPTS
    from export.source import SourceModel
    from export.toy_models import ToyModelSpec, cached_toy_model

    artifacts: dict[str, dict[str, Any]] = {}
    for arch in ARCHS:
        source = SourceModel.open(cached_toy_model(ToyModelSpec.tiny(arch), folder / "toys"))
        prompt = source.load_tokenizer().encode(CHECK_PROMPTS[0])
        for quantization in ("int8", "int4", "fp32"):
            out = folder / f"{arch}-{quantization}"
            export_onnx(source, out, quantization)
            if quantization != "fp32":
                artifacts[f"{arch} {quantization}"] = {"path": str(out / "model.onnx"), "prompt": prompt}
        control = folder / f"{arch}-dynamic8" / "model.onnx"
        control.parent.mkdir()
        with quiet_libraries():
            quantize_dynamic(
                folder / f"{arch}-fp32" / "model.onnx", control, op_types_to_quantize=["MatMul"], per_channel=True,
                reduce_range=False, weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True},
            )
        artifacts[f"{arch} {CONTROL}"] = {"path": str(control), "prompt": prompt}
    return artifacts


def run_all(folder: Path, artifacts: dict[str, dict[str, Any]], tokens: int, tag: str) -> dict[str, Any]:
    """What this CPU computes: kernel outputs, greedy tokens and prompt logits (written as .npy)."""
    import onnxruntime as ort

    from export.onnx.runner import OnnxRunner

    result: dict[str, Any] = {"kernel": {}, "models": {}}
    for model_file in sorted(folder.glob("kernel_*.onnx")):
        x = np.load(model_file.with_name(model_file.stem + "_x.npy"))
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        y = session.run(None, {"x": x})[0]
        np.save(folder / f"{model_file.stem}_{tag}.npy", y)
    for name, entry in artifacts.items():
        runner = OnnxRunner(entry["path"], threads=1)
        result["models"][name] = runner.greedy(entry["prompt"], tokens)
        np.save(folder / f"logits_{name.replace(' ', '_')}_{tag}.npy", runner.logits(entry["prompt"]))
    return result


def compare(folder: Path, references: dict[str, np.ndarray], artifacts: dict[str, Any], native: dict[str, Any],
            emulated: dict[str, Any], cpu: str) -> dict[str, Any]:
    report: dict[str, Any] = {"cpu": cpu, "kernel": {}, "models": {}}
    for name, reference in references.items():
        stem = "kernel_" + name.replace(" ", "_").replace(",", "")
        scale = float(np.abs(reference).max())
        row = {}
        for tag in ("native", "emulated"):
            y = np.load(folder / f"{stem}_{tag}.npy").astype(np.float64)
            row[f"{tag}_max_error_vs_exact"] = float(np.abs(y - reference).max()) / scale
        report["kernel"][name] = row
    for name in artifacts:
        stem = f"logits_{name.replace(' ', '_')}"
        a, b = (np.load(folder / f"{stem}_{tag}.npy") for tag in ("native", "emulated"))
        same = [x == y for x, y in zip(native["models"][name], emulated["models"][name], strict=True)]
        report["models"][name] = {
            "same_tokens": all(same),
            "first_difference": same.index(False) if not all(same) else None,
            "native": native["models"][name],
            "emulated": emulated["models"][name],
            "prompt_logits_max_diff": float(np.abs(a - b).max()),
        }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_haswell", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", default="Haswell", help="qemu-x86_64 -cpu model [default: Haswell]")
    parser.add_argument("--tokens", type=int, default=24, help="greedy tokens per model [default: 24]")
    parser.add_argument("--qemu", default="qemu-x86_64", help="the qemu user-mode binary")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--emulated", help=argparse.SUPPRESS)  # the run inside qemu: the work folder
    args = parser.parse_args(argv)
    if args.emulated:
        folder = Path(args.emulated)
        artifacts = json.loads((folder / "artifacts.json").read_text())
        (folder / "emulated.json").write_text(json.dumps(run_all(folder, artifacts, args.tokens, "emulated")))
        return
    with tempfile.TemporaryDirectory(prefix="onnx-haswell-") as work:
        folder = Path(work)
        references = kernel_cases(folder)
        artifacts = build_artifacts(folder)
        (folder / "artifacts.json").write_text(json.dumps(artifacts))
        native = run_all(folder, artifacts, args.tokens, "native")
        subprocess.run(
            [args.qemu, "-cpu", args.cpu, sys.executable, "-m", "benchmarks.onnx_haswell", "--emulated", str(folder),
             "--tokens", str(args.tokens)],
            check=True, stderr=subprocess.DEVNULL,
        )
        emulated = json.loads((folder / "emulated.json").read_text())
        report = compare(folder, references, artifacts, native, emulated, args.cpu)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"native vs qemu-x86_64 -cpu {args.cpu}")
    for name, row in report["kernel"].items():
        print(f"  kernel, {name}: max error vs exact / max |y|: native {row['native_max_error_vs_exact']:.2e}, "
              f"emulated {row['emulated_max_error_vs_exact']:.2e}")
    for name, row in report["models"].items():
        verdict = "same tokens" if row["same_tokens"] else f"differ from token {row['first_difference']}"
        print(f"  {name}: {verdict}; prompt logits max diff {row['prompt_logits_max_diff']:.2e}")


if __name__ == "__main__":
    main()
