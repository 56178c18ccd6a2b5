"""The numerical check and the quality gate, on real models and on plain numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.errors import NumericalMismatchError, QualityGateError, SpecError
from export.quality import (
    CHECK_PROMPTS,
    Perplexity,
    QualityGate,
    check_logits,
    eval_windows,
    hf_logits,
    hf_window_nll,
    perplexity,
)
from export.source import SourceModel
from export.toy_models import ToyModelSpec, cached_toy_model


def test_check_logits_names_the_prompt_and_position_that_diverge(tiny_llama: Path, toy_cache: Path) -> None:
    source = SourceModel.open(tiny_llama)
    model, tokenizer = source.load_model(), source.load_tokenizer()
    other = SourceModel.open(cached_toy_model(ToyModelSpec.tiny("llama", seed=3), toy_cache)).load_model()
    prompts = [tokenizer.encode(p) for p in CHECK_PROMPTS]
    same = check_logits("copy", prompts, lambda ids: hf_logits(model, ids), lambda ids: hf_logits(model, ids), 1e-6)
    assert same == 0.0
    with pytest.raises(NumericalMismatchError, match=r"other seed: logits diverge .* at prompt 0, position 0"):
        check_logits("other seed", prompts, lambda ids: hf_logits(model, ids), lambda ids: hf_logits(other, ids), 1e-3)


def test_check_logits_scales_its_tolerance_with_the_logits() -> None:
    reference = np.array([[100.0, -50.0]])
    slightly_off = reference + 0.5
    assert check_logits("x", [[1]], lambda _: reference, lambda _: slightly_off, atol=0.0, rtol=0.01) == 0.5
    with pytest.raises(NumericalMismatchError):
        check_logits("x", [[1]], lambda _: reference, lambda _: slightly_off, atol=0.0, rtol=0.001)


def test_perplexity_of_a_model_on_text_is_finite_and_windows_do_not_overlap(tiny_qwen2: Path, eval_text: str) -> None:
    source = SourceModel.open(tiny_qwen2)
    ids = source.load_tokenizer().encode(eval_text, add_special_tokens=False)
    windows = eval_windows(ids, 64, max_windows=4)
    assert [len(w) for w in windows] == [64] * 4
    assert [token for window in windows for token in window] == ids[:256]
    result = perplexity(windows, hf_window_nll(source.load_model()))
    assert result.tokens == 4 * 63
    assert 1.0 < result.value < float("inf")


def test_gate_passes_within_and_fails_beyond_its_bound() -> None:
    gate = QualityGate(1.0)
    assert gate.check("int8", Perplexity(10.0, 100), Perplexity(10.05, 100)).delta_pct == pytest.approx(0.5)
    with pytest.raises(QualityGateError, match=r"int8: perplexity 10.2000 is 2.00 % above .* \(gate: 1 %\)"):
        gate.check("int8", Perplexity(10.0, 100), Perplexity(10.2, 100))


def test_default_gates_and_bad_settings() -> None:
    assert QualityGate.default_for("q8_0").max_increase_pct == 1.0
    assert QualityGate.default_for("int4").max_increase_pct == 10.0
    with pytest.raises(SpecError, match="no default quality gate for quantization 'q2_k'"):
        QualityGate.default_for("q2_k")
    with pytest.raises(SpecError, match="must be >= 0"):
        QualityGate(-1.0)
    with pytest.raises(SpecError, match="shorter than two tokens"):
        eval_windows([1], 8)


def test_compare_reports_kl_and_top1_from_the_logits() -> None:
    import numpy as np

    from export.quality import compare

    rng = np.random.default_rng(0)
    source = rng.standard_normal((6, 50)).astype(np.float32) * 3
    candidate = source + rng.standard_normal((6, 50)).astype(np.float32) * 0.5
    window = [1, 2, 3, 4, 5, 6]
    same = compare([window], lambda w: source, lambda w: source)
    assert same.kl_divergence == pytest.approx(0.0, abs=1e-7) and same.top1_agreement == 1.0
    assert same.source.value == pytest.approx(same.candidate.value)
    other = compare([window], lambda w: source, lambda w: candidate)

    def log_softmax(x):
        x = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    p, q = log_softmax(source[:5]), log_softmax(candidate[:5])
    assert other.kl_divergence == pytest.approx(float((np.exp(p) * (p - q)).sum(axis=-1).mean()), rel=1e-5)
    assert other.top1_agreement == pytest.approx(float((p.argmax(-1) == q.argmax(-1)).mean()))
    assert other.candidate.tokens == 5


def test_the_gate_can_bound_kl_and_top1() -> None:
    import numpy as np

    from export.errors import QualityGateError
    from export.quality import Evaluation, QualityGate

    source = np.eye(8, dtype=np.float32) * 5
    candidate = np.roll(source, 1, axis=1)  # every position ranks another token first
    windows = [list(range(8))]
    loose = Evaluation("", QualityGate(1e9))
    result = loose.check("x", windows, lambda w: source, lambda w: candidate)
    assert result.top1_agreement == 0.0 and result.kl_divergence > 1 and result.windows == 1
    with pytest.raises(QualityGateError, match="KL divergence .*--max-kl"):
        Evaluation("", QualityGate(1e9, max_kl=0.5)).check("x", windows, lambda w: source, lambda w: candidate)
    with pytest.raises(QualityGateError, match="top token agrees .*--min-top1"):
        Evaluation("", QualityGate(1e9, min_top1=0.5)).check("x", windows, lambda w: source, lambda w: candidate)
    with pytest.raises(SpecError, match="--min-top1"):
        QualityGate(1.0, min_top1=2.0)
