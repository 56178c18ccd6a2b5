"""The distillation loss (Hinton et al., 2015): soft targets from the teacher plus hard targets from the data.

    loss = alpha_kl * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + alpha_ce * CE(student, next token)

The KL term is summed over the vocabulary and averaged over every position of the batch (the teacher has a
distribution for each, the last included); the cross-entropy is averaged over the positions that have a
next token. The T^2 factor keeps the soft-target gradients at the same scale whatever the temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    """What is back-propagated."""
    kl: torch.Tensor
    """The KL divergence at temperature T, already multiplied by T^2 (before alpha_kl)."""
    ce: torch.Tensor
    """Cross-entropy of the next tokens (before alpha_ce)."""


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), summed over the vocabulary, averaged over positions."""
    import torch.nn.functional as F

    vocab = student_logits.shape[-1]
    student_log_probs = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def next_token_cross_entropy(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of token i+1 given positions 0..i, over the batch."""
    import torch.nn.functional as F

    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), input_ids[:, 1:].reshape(-1))


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    input_ids: torch.Tensor,
    *,
    temperature: float,
    alpha_kl: float,
    alpha_ce: float,
) -> LossParts:
    """The weighted sum of both terms; ``teacher_logits`` may be None only when ``alpha_kl`` is 0 (then the
    teacher is not run at all and the KL term is reported as 0)."""
    import torch

    ce = next_token_cross_entropy(student_logits, input_ids)
    if teacher_logits is None:
        if alpha_kl:
            raise ValueError("teacher_logits are needed when alpha_kl > 0")
        kl = torch.zeros((), dtype=ce.dtype)
    else:
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} differ"
            )
        kl = kl_divergence(student_logits, teacher_logits, temperature)
    return LossParts(total=alpha_kl * kl + alpha_ce * ce, kl=kl, ce=ce)
