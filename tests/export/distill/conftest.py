"""Fixtures of the distillation tests: text files and a teacher that has learned that text."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from export.toy_models.corpus import corpus_lines

TEACHER_STEPS = 150


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine two spinning OpenMP
    threads run 2-3x slower than one (measured). Results are the same either way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def write_corpus(path: Path, lines: int, seed: int = 7) -> Path:
    path.write_text("\n".join(corpus_lines(lines, seed)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 16k tokens of the toy corpus: prose, chat turns, arithmetic, code, JSON (one document per line)."""
    return write_corpus(tmp_path_factory.mktemp("distill-data") / "corpus.txt", 400)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1k tokens: enough for a few quick steps that cross an epoch boundary."""
    return write_corpus(tmp_path_factory.mktemp("distill-small") / "small.txt", 30)


@pytest.fixture(scope="session")
def mistral_teacher(tiny_mistral: Path) -> Path:
    """The toy factory's tiny Mistral (SentencePiece tokenizer)."""
    return tiny_mistral


@pytest.fixture(scope="session")
def trained_teacher(tiny_llama: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny Llama that has actually learned ``corpus``: the distill loop with alpha_kl=0 is plain
    next-token cross-entropy training of a randomly initialised model of the toy model's shape (the toy
    model only lends its tokenizer and config). Returns the run's DistillResult; ``.out`` is the folder."""
    from export.distill import DistillConfig, StudentSpec, distill

    config = DistillConfig(
        teacher=tiny_llama,
        data=corpus,
        out=tmp_path_factory.mktemp("distill-teacher") / "teacher",
        student=StudentSpec(),
        alpha_kl=0.0,
        alpha_ce=1.0,
        steps=TEACHER_STEPS,
        lr=1e-2,
        warmup_steps=10,
        seq_len=64,
        batch_size=16,
        checkpoint_every=0,
    )
    with one_torch_thread():  # Session fixtures are set up before the module-scoped autouse one.
        return distill(config)
