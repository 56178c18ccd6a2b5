"""A whole distillation run: checks, data, student, held-out perplexities, training, the output folder.

    from export.distill import DistillConfig, StudentSpec, distill
    result = distill(DistillConfig(teacher="teacher/", data="text.jsonl", out="student/",
                                   student=StudentSpec(keep_layers=(0, 2)), steps=500, checkpoint_every=100))

Everything the user can get wrong (options, data, the output folder, a kept layer that does not exist) is
checked before the teacher's weights are loaded; the output folder appears whole at the end or not at all.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.atomic import staged_folder
from export.distill.checkpoints import CheckpointError, clear_checkpoints, latest_checkpoint, load_checkpoint
from export.distill.config import DistillConfig
from export.distill.data import (
    PackedData,
    encode_chats,
    pack,
    pad_examples,
    read_chat_examples,
    read_documents,
    tokenize_documents,
)
from export.distill.student import build_student, student_config_dict
from export.distill.trainer import DistillTrainer, StepCallback
from export.errors import OutputExistsError, SpecError
from export.quality import Perplexity, hf_window_nll, perplexity
from export.source import SourceModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel

REPORT_NAME = "distill_report.json"

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
"""Copied byte for byte from the teacher: the student shares its tokenizer."""

PHASES = ("data", "teacher", "evaluate", "train", "evaluate-final", "save")
"""The phase names ``on_phase`` hears, in order: reading and tokenizing the data, loading the teacher and
building the student, held-out perplexities before training, training, the student's perplexity after,
writing the output folder."""

PhaseCallback = Callable[[str], None]


@dataclass(frozen=True)
class DistillResult:
    out: Path
    teacher_perplexity: Perplexity
    student_initial_perplexity: Perplexity
    student_perplexity: Perplexity
    steps: int
    resumed_from_step: int | None
    """The checkpoint's step when the run continued from one, else None."""
    seconds: float
    """Wall time of this call."""
    report: dict[str, Any] = field(repr=False)
    """What ``distill_report.json`` in the output holds."""


def _no_phase(_: str) -> None:
    pass


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _held_out_perplexity(model: PreTrainedModel, windows: list[list[int]]) -> Perplexity:
    was_training = model.training
    model.eval()
    try:
        return perplexity(windows, hf_window_nll(model))
    finally:
        model.train(was_training)


def prepare_data(config: DistillConfig, source: SourceModel) -> PackedData:
    """Read, tokenize and pack ``config.data`` with the teacher's tokenizer (chat examples: render, tokenize
    and pad each one)."""
    if config.text_mode == "chat":
        examples = read_chat_examples(config.data)
    else:
        documents = read_documents(config.data, config.text_mode)
    if config.seq_len > source.context_length:
        raise SpecError(
            f"seq_len={config.seq_len} exceeds the teacher's context length {source.context_length}; lower seq_len"
        )
    tokenizer = source.load_tokenizer()
    if config.text_mode == "chat":
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return pad_examples(encode_chats(tokenizer, examples), config.seq_len, config.eval_fraction, pad_id)
    return pack(tokenize_documents(tokenizer, documents), config.seq_len, config.eval_fraction)


def _ppl(value: Perplexity) -> dict[str, float | int]:
    return {"perplexity": value.value, "tokens": value.tokens}


def _write_student(staging: Path, student: PreTrainedModel, teacher_folder: Path, report: dict[str, Any]) -> None:
    student.save_pretrained(staging, safe_serialization=True)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (teacher_folder / name).is_file():
            shutil.copyfile(teacher_folder / name, staging / name)
    (staging / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def distill(
    config: DistillConfig,
    *,
    resume: bool = True,
    on_step: StepCallback | None = None,
    on_phase: PhaseCallback = _no_phase,
) -> DistillResult:
    """Distill ``config.teacher`` into a student and write it to ``config.out``.

    With ``resume`` the run continues from the newest checkpoint in ``config.checkpoint_folder`` (if any;
    CheckpointError when it was written with other settings); without, old checkpoints there are removed
    first. ``on_step`` hears every optimizer step (StepStats), ``on_phase`` each name of PHASES.

    Raises SpecError (DataError) for bad options or data, SourceModelError for an unusable teacher folder,
    OutputExistsError when ``config.out`` exists without ``overwrite``.
    """
    import torch

    started = time.perf_counter()
    if config.out.exists() and not config.overwrite:
        raise OutputExistsError(f"{config.out} already exists; choose another folder or overwrite it")
    source = SourceModel.open(config.teacher)
    student_config_dict(source.config, config.student)  # Fails on a bad student before anything is loaded.
    on_phase("data")
    data = prepare_data(config, source)
    total_steps = config.total_steps(len(data.train))
    if config.warmup_steps >= total_steps:
        raise SpecError(f"warmup_steps={config.warmup_steps} must be smaller than the run's {total_steps} steps")
    windows = data.held_out_windows(config.eval_max_windows)

    on_phase("teacher")
    teacher = source.load_model(torch.float32)
    seed_everything(config.seed)
    student = build_student(teacher, config.student, config.seed)
    fingerprint = {
        **config.training_fingerprint(),
        "teacher": str(config.teacher.resolve()),
        "train_data_sha256": data.digest(),
        "total_steps": total_steps,
    }
    trainer = DistillTrainer(
        student, teacher if config.alpha_kl else None, data, config, total_steps, fingerprint
    )

    checkpoint = latest_checkpoint(config.checkpoint_folder) if resume else None
    if not resume:
        clear_checkpoints(config.checkpoint_folder)
    resumed_from = None
    on_phase("evaluate")
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        trainer.load_state_dict(state, source=checkpoint)
        resumed_from = trainer.step
        # The student at initialisation is gone: its perplexity travels in the checkpoint.
        saved_initial = state.get("extra", {}).get("student_initial_perplexity")
        if saved_initial is None:
            raise CheckpointError(f"{checkpoint} lacks the student's initial perplexity; run with --no-resume")
        initial = Perplexity(**saved_initial)
    else:
        initial = _held_out_perplexity(student, windows)
    teacher_ppl = _held_out_perplexity(teacher, windows)

    on_phase("train")
    extra = {"student_initial_perplexity": {"value": initial.value, "tokens": initial.tokens}}
    trainer.run(on_step, config.checkpoint_folder, config.checkpoint_every, extra)

    on_phase("evaluate-final")
    final = _held_out_perplexity(student, windows)

    on_phase("save")
    report = {
        "config": config.as_dict(),
        "teacher": {"path": str(config.teacher), "arch": source.arch,
                    "parameters": sum(p.numel() for p in teacher.parameters())},
        "student": {"spec": config.student.describe(),
                    "parameters": sum(p.numel() for p in student.parameters()),
                    "num_hidden_layers": student.config.num_hidden_layers,
                    "hidden_size": student.config.hidden_size},
        "data": {"train_sequences": len(data.train), "held_out_sequences": len(data.held_out),
                 "seq_len": data.seq_len, "train_tokens": data.train_tokens,
                 "dropped_tokens": data.dropped_tokens, "train_data_sha256": fingerprint["train_data_sha256"]},
        "held_out": {
            "windows": len(windows),
            "teacher": _ppl(teacher_ppl),
            "student_initial": _ppl(initial),
            "student": _ppl(final),
        },
        "steps": total_steps,
        "epochs": trainer.batches.epochs(total_steps),
        "resumed_from_step": resumed_from,
        "train_seconds": trainer.train_seconds,
        "seconds": time.perf_counter() - started,
    }
    student.eval()
    with staged_folder(config.out, overwrite=config.overwrite) as staging:
        _write_student(staging, student, source.path, report)
    if not config.keep_checkpoints:
        clear_checkpoints(config.checkpoint_folder)
    return DistillResult(
        out=config.out,
        teacher_perplexity=teacher_ppl,
        student_initial_perplexity=initial,
        student_perplexity=final,
        steps=total_steps,
        resumed_from_step=resumed_from,
        seconds=time.perf_counter() - started,
        report=report,
    )
