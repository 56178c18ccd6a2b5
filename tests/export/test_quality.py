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
