"""The training loop: student steps against the teacher's logits, with checkpoints that resume exactly.

Everything a step depends on is either in the checkpoint (weights, AdamW moments, scheduler position, RNG
states) or a pure function of (seed, step) (the batch, see ``data.BatchSchedule``), so N steps, a stop and
a resume to 2N give the same weights as 2N steps in one go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.distill.checkpoints import CheckpointError, rng_state, save_checkpoint, set_rng_state
from export.distill.config import DistillConfig
from export.distill.data import BatchSchedule, PackedData, batch_mask, batch_tensor
from export.distill.loss import distillation_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MIN_LR_RATIO = 0.1
"""The cosine schedule ends at this share of the peak learning rate."""

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class StepStats:
    """What the progress callback gets after every optimizer step."""

    step: int
    """Steps done so far (1 after the first step), counting steps done before a resume."""
    total_steps: int
    loss: float
    kl: float
    """KL term (times T^2, before alpha_kl)."""
    ce: float
    """Cross-entropy term (before alpha_ce)."""
    lr: float
    """Learning rate the step used."""
    tokens_per_s: float
    """Training tokens per second since this process started (or resumed) training."""
    epoch: float
    """Passes over the training sequences so far."""


StepCallback = Callable[[StepStats], None]


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warmup over
    ``warmup_steps``, then constant or a half cosine down to MIN_LR_RATIO at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress))


class DistillTrainer:
    """Owns the optimizer and scheduler of one run; ``run`` trains from ``self.step`` to ``total_steps``."""

    def __init__(
        self,
        student: PreTrainedModel,
        teacher: PreTrainedModel | None,
        data: PackedData,
        config: DistillConfig,
        total_steps: int,
        fingerprint: dict[str, Any],
    ) -> None:
        import torch

        if teacher is None and config.alpha_kl:
            raise ValueError("a teacher is needed when alpha_kl > 0")
        self.student = student
        self.teacher = teacher.eval() if teacher is not None else None
        self.data = data
        self.config = config
        self.total_steps = total_steps
        self.fingerprint = fingerprint
        self.batches = BatchSchedule(len(data.train), config.batch_size, config.seed)
        self.optimizer = torch.optim.AdamW(
            student.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, config.adam_beta2)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.train_seconds = 0.0
        """Seconds spent in training steps, across resumes."""

    def _lr_factor(self, step: int) -> float:
        return lr_factor(
            step, warmup_steps=self.config.warmup_steps, total_steps=self.total_steps,
            schedule=self.config.lr_schedule,
        )

    # -- checkpoints ------------------------------------------------------------------------------------

    def state_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        epoch, index = self.batches.position(self.step)
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "total_steps": self.total_steps,
            "student": {key: value.detach().clone() for key, value in self.student.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "data_position": {
                "samples_seen": self.step * self.config.batch_size,
                "epoch": epoch,
                "index_in_epoch": index,
                "batch_size": self.config.batch_size,
                "train_sequences": len(self.data.train),
            },
            "train_seconds": self.train_seconds,
            "fingerprint": self.fingerprint,
            "extra": extra or {},
        }

    def load_state_dict(self, state: dict[str, Any], source: Path | str = "checkpoint") -> None:
        """Continue from ``state``; raises CheckpointError when it was written by a run with other settings."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{source} has checkpoint format {state.get('format')!r}, this version writes "
                f"{CHECKPOINT_FORMAT}; delete it or run with --no-resume"
            )
        saved = state.get("fingerprint", {})
        differing = sorted(set(saved) | set(self.fingerprint))
        differing = [key for key in differing if saved.get(key) != self.fingerprint.get(key)]
        if differing:
            key = differing[0]
            raise CheckpointError(
                f"{source} was written by a run with other settings ({', '.join(differing)} differ, e.g. {key}: "
                f"{saved.get(key)!r} then, {self.fingerprint.get(key)!r} now); restore them to resume, or run "
                "with --no-resume to start over"
            )
        self.student.load_state_dict(state["student"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        set_rng_state(state["rng"])

    # -- training ---------------------------------------------------------------------------------------

    def train_step(self) -> tuple[float, float, float, float]:
        """One optimizer step; returns (loss, kl, ce, lr used)."""
        import torch

        indices = self.batches.batch_indices(self.step)
        input_ids, target_mask = batch_tensor(self.data, indices), batch_mask(self.data, indices)
        if target_mask is not None:
            # Chat examples: positions after the batch's last answer token are padding nothing attends to.
            length = int(target_mask.nonzero()[:, 1].max()) + 1
            input_ids, target_mask = input_ids[:, :length], target_mask[:, :length]
        teacher_logits = None
        if self.teacher is not None and self.config.alpha_kl:
            with torch.no_grad():
                teacher_logits = self.teacher(input_ids).logits
        self.student.train()
        student_logits = self.student(input_ids).logits
        parts = distillation_loss(
            student_logits, teacher_logits, input_ids,
            temperature=self.config.temperature, alpha_kl=self.config.alpha_kl, alpha_ce=self.config.alpha_ce,
            target_mask=target_mask,
        )
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(parts.total.detach()), float(parts.kl.detach()), float(parts.ce.detach()), float(lr)

    def run(
        self,
        on_step: StepCallback | None = None,
        checkpoint_folder: Path | None = None,
        checkpoint_every: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Train to ``total_steps``. A checkpoint is written every ``checkpoint_every`` steps and after the
        last one (when ``checkpoint_every`` > 0), *before* ``on_step`` hears of that step."""
        tokens_per_step = self.config.batch_size * self.data.seq_len
        started, steps_here = time.perf_counter(), 0
        while self.step < self.total_steps:
            step_started = time.perf_counter()
            loss, kl, ce, lr = self.train_step()
            self.train_seconds += time.perf_counter() - step_started
            steps_here += 1
            if checkpoint_folder is not None and checkpoint_every and (
                self.step % checkpoint_every == 0 or self.step == self.total_steps
            ):
                save_checkpoint(checkpoint_folder, self.step, self.state_dict(extra))
            if on_step is not None:
                seconds = max(time.perf_counter() - started, 1e-9)
                on_step(
                    StepStats(
                        step=self.step, total_steps=self.total_steps, loss=loss, kl=kl, ce=ce, lr=lr,
                        tokens_per_s=steps_here * tokens_per_step / seconds,
                        epoch=self.batches.epochs(self.step),
                    )
                )
