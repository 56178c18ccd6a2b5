"""The distillation loss against a hand computation."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from export.distill.loss import distillation_loss, kl_divergence, next_token_cross_entropy  # noqa: E402


def _logits(seed: int, shape=(2, 5, 11)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_kl_is_zero_for_identical_logits_and_positive_otherwise() -> None:
    a, b = _logits(0), _logits(1)
    assert kl_divergence(a, a.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence(a, b, 2.0).item() > 0


def test_kl_matches_the_definition_with_the_t_squared_factor() -> None:
    student, teacher, temperature = _logits(2), _logits(3), 3.0
    expected, positions = 0.0, 0
    for row_s, row_t in zip(student.reshape(-1, 11), teacher.reshape(-1, 11), strict=True):
        p = torch.softmax(row_t / temperature, -1).double()
        q = torch.softmax(row_s / temperature, -1).double()
        expected += float((p * (p.log() - q.log())).sum())
        positions += 1
    expected = temperature**2 * expected / positions
    assert kl_divergence(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_scores_the_next_token() -> None:
    logits = _logits(4)
    ids = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(5))
    log_probs = torch.log_softmax(logits.double(), -1)
    expected = -sum(float(log_probs[b, t, ids[b, t + 1]]) for b in range(2) for t in range(4)) / 8
    assert next_token_cross_entropy(logits, ids).item() == pytest.approx(expected, rel=1e-5)


def test_weights_combine_both_terms_and_gradients_flow() -> None:
    student = _logits(6).requires_grad_()
    teacher = _logits(7)
    ids = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(8))
    parts = distillation_loss(student, teacher, ids, temperature=2.0, alpha_kl=0.7, alpha_ce=0.3)
    assert parts.total.item() == pytest.approx(0.7 * parts.kl.item() + 0.3 * parts.ce.item(), rel=1e-6)
    parts.total.backward()
    assert student.grad is not None and math.isfinite(float(student.grad.abs().sum()))


def test_without_teacher_only_cross_entropy_is_allowed() -> None:
    logits, ids = _logits(9), torch.zeros((2, 5), dtype=torch.long)
    parts = distillation_loss(logits, None, ids, temperature=1.0, alpha_kl=0.0, alpha_ce=1.0)
    assert parts.kl.item() == 0.0
    assert parts.total.item() == pytest.approx(parts.ce.item())
    with pytest.raises(ValueError, match="teacher_logits are needed"):
        distillation_loss(logits, None, ids, temperature=1.0, alpha_kl=0.5, alpha_ce=0.5)
