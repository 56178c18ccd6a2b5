"""The distillation loss (Hinton et al., 2015): soft targets from the teacher plus hard targets from the data.

    loss = alpha_kl * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + alpha_ce * CE(student, next token)

The KL term is summed over the vocabulary and averaged over every position of the batch (the teacher has a
distribution for each, the last included); the cross-entropy is averaged over the positions that have a
next token. The T^2 factor keeps the soft-target gradients at the same scale whatever the temperature.

With a ``target_mask`` (chat examples: 1 on the tokens of the assistant's answer) both terms are averaged
over the positions that predict a masked token only, so the student spends its capacity on the answers
rather than on imitating guesses of the prompt.
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


def kl_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), summed over the vocabulary, averaged over positions (weighted by
    ``weights`` of the logits' leading shape when given)."""
    import torch.nn.functional as F

    vocab = student_logits.shape[-1]
    student_log_probs = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    if weights is None:
        kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    else:
        per_position = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
        flat = weights.float().reshape(-1)
        kl = (per_position * flat).sum() / flat.sum().clamp_min(1.0)
    return kl * temperature**2


def next_token_cross_entropy(
    logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of token i+1 given positions 0..i, over the batch (over the tokens where
    ``target_mask`` is 1, when given)."""
    import torch.nn.functional as F

    vocab = logits.shape[-1]
    flat_logits, targets = logits[:, :-1].float().reshape(-1, vocab), input_ids[:, 1:].reshape(-1)
    if target_mask is None:
        return F.cross_entropy(flat_logits, targets)
    weights = target_mask[:, 1:].float().reshape(-1)
    return (F.cross_entropy(flat_logits, targets, reduction="none") * weights).sum() / weights.sum().clamp_min(1.0)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    input_ids: torch.Tensor,
    *,
    temperature: float,
    alpha_kl: float,
    alpha_ce: float,
    target_mask: torch.Tensor | None = None,
) -> LossParts:
    """The weighted sum of both terms; ``teacher_logits`` may be None only when ``alpha_kl`` is 0 (then the
    teacher is not run at all and the KL term is reported as 0). ``target_mask`` (batch, tokens): 1 where a
    token is a training target; both terms then score only the positions that predict such a token."""
    import torch

    ce = next_token_cross_entropy(student_logits, input_ids, target_mask)
    if teacher_logits is None:
        if alpha_kl:
            raise ValueError("teacher_logits are needed when alpha_kl > 0")
        kl = torch.zeros((), dtype=ce.dtype)
    else:
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} differ"
            )
        if target_mask is None:
            kl = kl_divergence(student_logits, teacher_logits, temperature)
        else:
            kl = kl_divergence(student_logits[:, :-1], teacher_logits[:, :-1], temperature, target_mask[:, 1:])
    return LossParts(total=alpha_kl * kl + alpha_ce * ce, kl=kl, ce=ce)
