"""The edge benchmark's machinery on the tiny test bundles: ours and the raw library alternate on the same
prompts and produce the same greedy tokens, and TTFT is split at the timed prompt-evaluation call."""

from __future__ import annotations

import pytest

from benchmarks import edge


def test_the_prefill_clock_times_only_the_first_call_since_reset() -> None:
    clock = edge.PrefillClock()
    calls: list[int] = []

    def evaluate(n: int) -> int:
        calls.append(n)
        if n < 0:
            raise ValueError("bad")
        return 2 * n

    timed = clock.wrap(evaluate)
    assert clock.seconds is None
    assert timed(3) == 6
    first = clock.seconds
    assert first is not None and first >= 0
    assert timed(4) == 8 and clock.seconds == first  # later calls (decode steps) are not the prompt's
    clock.reset()
    with pytest.raises(ValueError):
        timed(-1)
    assert clock.seconds is not None and clock.seconds != first  # a failed call is timed too
    assert calls == [3, 4, -1]


@pytest.mark.parametrize(("fmt", "quantization"), [("gguf", "f32"), ("onnx", "fp32")])
def test_ours_and_raw_alternate_and_split_ttft_at_the_prompt_call(bundles, trusted, fmt, quantization) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime_genai")
    from tokenizers import Tokenizer

    bundle = bundles("llama", fmt, quantization)
    prompts = edge.make_prompts(Tokenizer.from_file(str(bundle / "tokenizer.json")), 24)
    settings = edge.Settings(rounds=2, ttft_rounds=2, new_tokens=6, threads=1, context=256, per_round=True)
    row = edge.bench_backend(f"{fmt} {quantization}", bundle, trusted[0], prompts, settings, lambda _: None)
    assert row["same_tokens"]
    assert row["decode_rounds"] == 2 and row["ttft_samples"] == 4
    assert row["prompt_tokens"] == row["raw_prompt_tokens"] == 24
    assert row["ttft_ms"] > 0 and row["raw_ttft_ms"] > 0 and row["decode_tps"] > 0 and row["raw_decode_tps"] > 0
    for key in ("paired_ttft_overhead", "paired_ttft_outside_prefill", "paired_prefill_call_diff"):
        low, high = row[f"{key}_ci95_ms"]
        assert low <= row[f"{key}_ms"] <= high
    rounds = row["per_round"]
    for side in ("", "raw_"):
        ttft, call = rounds[f"{side}ttft_ms"], rounds[f"{side}prefill_call_ms"]
        assert len(call) == len(ttft) == 4
        assert all(0 < c <= t + 0.05 for c, t in zip(call, ttft, strict=True))  # part of the TTFT (0.1 ms rounding)
