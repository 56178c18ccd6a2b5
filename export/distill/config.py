"""What a distillation run is: teacher, student, data, optimisation and output, validated where it is built.

Errors name the field (``student.hidden_size``, ``eval_fraction``...) and say what to do. Checks that need the
teacher's config (a kept layer that does not exist, a head count that does not divide the teacher's hidden
size) happen in ``export.distill.student`` once the teacher is opened, still before any output is written.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.errors import SpecError

LR_SCHEDULES = ("cosine", "constant")
TEXT_MODES = ("lines", "whole", "chat")

# Student fields that override the teacher's config (random initialisation), by config.json name.
OVERRIDE_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
)


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SpecError(f"{name}={value!r} must be a positive integer")


@dataclass(frozen=True)
class StudentSpec:
    """The student: EITHER a subset of the teacher's decoder layers (``keep_layers``, weights copied) OR
    overrides of the teacher's sizes (random initialisation). With neither, the student has the teacher's
    shape and random weights. The student always shares the teacher's tokenizer and vocabulary."""

    keep_layers: tuple[int, ...] | None = None
    """Teacher layer indices to keep, in increasing order, e.g. (0, 2): embeddings, final norm, lm_head
    and these layers are copied from the teacher."""
    num_hidden_layers: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None

    def __post_init__(self) -> None:
        if self.keep_layers is not None:
            object.__setattr__(self, "keep_layers", tuple(self.keep_layers))
            layers = self.keep_layers
            if not layers:
                raise SpecError("student.keep_layers is empty; keep at least one teacher layer, e.g. 0,2")
            for index in layers:
                if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                    raise SpecError(f"student.keep_layers={list(layers)}: {index!r} is not a layer index (>= 0)")
            if list(layers) != sorted(set(layers)):
                raise SpecError(
                    f"student.keep_layers={list(layers)} must list distinct layers in increasing order"
                )
            given = [name for name in OVERRIDE_FIELDS if getattr(self, name) is not None]
            if given:
                raise SpecError(
                    f"student.keep_layers cannot be combined with student.{given[0]}: a student is either "
                    "a subset of the teacher's layers or a new (smaller) config, not both"
                )
        for name in OVERRIDE_FIELDS:
            _positive(f"student.{name}", getattr(self, name))
        hidden, heads, kv_heads = self.hidden_size, self.num_attention_heads, self.num_key_value_heads
        if hidden is not None and heads is not None:
            if hidden % heads:
                raise SpecError(
                    f"student.hidden_size={hidden} must be divisible by student.num_attention_heads={heads}"
                )
            if (hidden // heads) % 2:
                raise SpecError(
                    f"student head size {hidden // heads} (hidden_size / num_attention_heads) must be even "
                    "for the rotary embedding; change student.hidden_size or student.num_attention_heads"
                )
        if heads is not None and kv_heads is not None and heads % kv_heads:
            raise SpecError(
                f"student.num_attention_heads={heads} must be a multiple of student.num_key_value_heads={kv_heads}"
            )

    @property
    def overrides(self) -> dict[str, int]:
        """The config.json fields this spec changes (empty for keep_layers)."""
        return {name: getattr(self, name) for name in OVERRIDE_FIELDS if getattr(self, name) is not None}

    def describe(self) -> str:
        if self.keep_layers is not None:
            return f"teacher layers {', '.join(map(str, self.keep_layers))}"
        if not self.overrides:
            return "teacher shape, random init"
        return ", ".join(f"{name}={value}" for name, value in self.overrides.items()) + ", random init"


def _path(value: str | os.PathLike[str]) -> Path:
    return Path(value)


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run. ``steps`` or ``epochs`` sets its length (neither: one epoch)."""

    teacher: Path
    """A Hugging Face model folder (llama, mistral or qwen2) with safetensors weights and a tokenizer."""
    data: Path
    """A text file (``text_mode``: one document per line, or the whole file as one) or a ``.jsonl`` file
    with a "text" field per line."""
    out: Path
    """The student's folder, written atomically at the end; it must not exist unless ``overwrite``."""
    student: StudentSpec = field(default_factory=StudentSpec)
    seq_len: int = 128
    batch_size: int = 8
    steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    """"cosine" (to 10 % of ``lr`` at the last step) or "constant", after ``warmup_steps`` of linear warmup."""
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    """AdamW's second-moment decay. Short runs of tiny models learn faster with 0.98 (measured on the task
    suite: lower loss on every task family after 1,500 steps)."""
    grad_clip: float | None = 1.0
    """Largest gradient norm; None leaves gradients unclipped."""
    temperature: float = 2.0
    alpha_kl: float = 0.5
    """Weight of the KL divergence to the teacher's temperature-softened distribution (times T^2)."""
    alpha_ce: float = 0.5
    """Weight of the cross-entropy on the data's next tokens."""
    seed: int = 0
    eval_fraction: float = 0.1
    """Share of the packed sequences held out (the last ones) for perplexity; never trained on."""
    eval_max_windows: int | None = None
    """Score at most this many held-out windows (None: all)."""
    text_mode: str = "lines"
    """Text files: "lines" (a document per line) or "whole" (one document). "chat": a ``.jsonl`` file of
    conversations ({"messages": [...]}, the assistant's answer last), one padded sequence each, trained on
    the answer's tokens only."""
    checkpoint_every: int = 100
    """Write a checkpoint every this many steps and after the last one (0: never)."""
    checkpoint_dir: Path | None = None
    """Where checkpoints go; default ``<out>.checkpoints`` next to the output."""
    keep_checkpoints: bool = False
    """Keep the checkpoints after a successful run (by default they are removed once the output exists)."""
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("teacher", "data", "out"):
            value = getattr(self, name)
            if not isinstance(value, str | os.PathLike) or not str(value):
                raise SpecError(f"{name}={value!r} must be a path")
            object.__setattr__(self, name, _path(value))
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", _path(self.checkpoint_dir))
        if not isinstance(self.student, StudentSpec):
            raise SpecError(f"student={self.student!r} must be a StudentSpec")
        _positive("seq_len", self.seq_len)
        if self.seq_len < 2:
            raise SpecError(f"seq_len={self.seq_len} must be at least 2 tokens (one input, one target)")
        _positive("batch_size", self.batch_size)
        _positive("steps", self.steps)
        _positive("epochs", self.epochs)
        if self.steps is not None and self.epochs is not None:
            raise SpecError(f"steps={self.steps} and epochs={self.epochs} both given; set only one")
        _positive("eval_max_windows", self.eval_max_windows)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise SpecError(f"lr={self.lr!r} must be a positive number")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SpecError(f"lr_schedule={self.lr_schedule!r} is not supported; choose one of {LR_SCHEDULES}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise SpecError(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if self.steps is not None and self.warmup_steps >= self.steps:
            raise SpecError(f"warmup_steps={self.warmup_steps} must be smaller than steps={self.steps}")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise SpecError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if not (isinstance(self.adam_beta2, int | float) and 0 < self.adam_beta2 < 1):
            raise SpecError(f"adam_beta2={self.adam_beta2!r} must be between 0 and 1 (exclusive), e.g. 0.999")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, int | float) and self.grad_clip > 0):
            raise SpecError(f"grad_clip={self.grad_clip!r} must be positive, or None for no clipping")
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise SpecError(f"temperature={self.temperature!r} must be a positive number (1 = unsoftened)")
        for name in ("alpha_kl", "alpha_ce"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SpecError(f"{name}={value!r} must be a number >= 0")
        if self.alpha_kl == 0 and self.alpha_ce == 0:
            raise SpecError("alpha_kl and alpha_ce are both 0: the loss would be zero; give one a positive weight")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError(f"seed={self.seed!r} must be an integer >= 0")
        if not (isinstance(self.eval_fraction, int | float) and 0 < self.eval_fraction < 1):
            raise SpecError(
                f"eval_fraction={self.eval_fraction!r} must be between 0 and 1 (exclusive), e.g. 0.1: the "
                "held-out share is needed for the perplexity report"
            )
        if self.text_mode not in TEXT_MODES:
            raise SpecError(f"text_mode={self.text_mode!r} is not supported; choose one of {TEXT_MODES}")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise SpecError(f"checkpoint_every={every!r} must be an integer >= 0 (0: no checkpoints)")
        if self.out.resolve() == self.teacher.resolve():
            raise SpecError(f"out={self.out} is the teacher's folder; write the student elsewhere")

    @property
    def checkpoint_folder(self) -> Path:
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.out.with_name(
            self.out.name + ".checkpoints"
        )

    def total_steps(self, train_sequences: int) -> int:
        """Optimizer steps of the run: ``steps``, or enough batches for ``epochs`` (default 1) passes."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil((self.epochs or 1) * train_sequences / self.batch_size))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, the student spec as a nested dict."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["student"] = {
            key: (list(value) if isinstance(value, tuple) else value)
            for key, value in asdict(self.student).items()
            if value is not None
        }
        data["checkpoint_dir"] = str(self.checkpoint_folder)
        return data

    def training_fingerprint(self) -> dict[str, Any]:
        """The fields a checkpoint must agree with to be resumed: everything that shapes the weights
        (not the output folder, overwrite, checkpoint cadence or how many windows are scored)."""
        data = self.as_dict()
        for key in ("out", "overwrite", "checkpoint_every", "checkpoint_dir", "keep_checkpoints",
                    "eval_max_windows", "teacher", "data"):
            data.pop(key)
        return data
