"""Students made from a teacher: kept layers are exact copies; a config student is a consistent smaller model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from export.distill import StudentSpec
from export.distill.student import build_student, student_config_dict
from export.errors import SpecError
from export.source import SourceModel

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def teachers(tiny_llama: Path, tiny_qwen2: Path, mistral_teacher: Path) -> dict[str, Path]:
    return {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": mistral_teacher}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_kept_layers_are_copies_of_the_teachers(teachers: dict[str, Path], arch: str) -> None:
    source = SourceModel.open(teachers[arch])
    assert source.arch == arch
    teacher = source.load_model()
    student = build_student(teacher, StudentSpec(keep_layers=(1,)), seed=0)
    assert student.config.num_hidden_layers == 1
    assert type(student) is type(teacher)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for key, value in student_state.items():
        source_key = re.sub(r"^model\.layers\.0\.", "model.layers.1.", key)
        assert torch.equal(value, teacher_state[source_key]), key
    # The student's weights are its own: training it leaves the teacher alone.
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    assert not torch.equal(next(student.parameters()), next(teacher.parameters()))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_keeping_every_layer_reproduces_the_teacher(teachers: dict[str, Path], arch: str) -> None:
    teacher = SourceModel.open(teachers[arch]).load_model()
    student = build_student(teacher, StudentSpec(keep_layers=(0, 1)), seed=0).eval()
    ids = torch.tensor([[1, 5, 9, 200, 3, 7]])
    with torch.no_grad():
        assert torch.equal(student(ids).logits, teacher(ids).logits)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_a_config_student_is_narrower_and_shares_the_vocabulary(teachers: dict[str, Path], arch: str) -> None:
    teacher = SourceModel.open(teachers[arch]).load_model()
    spec = StudentSpec(num_hidden_layers=1, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                       num_key_value_heads=1)
    student = build_student(teacher, spec, seed=3)
    config = student.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (1, 32, 48)
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert config.vocab_size == teacher.config.vocab_size
    assert config.eos_token_id == teacher.config.eos_token_id
    assert getattr(config, "head_dim", None) in (None, 16)
    assert student.get_input_embeddings().weight.shape == (teacher.config.vocab_size, 32)
    with torch.no_grad():
        logits = student(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, teacher.config.vocab_size)
    # Seeded: the same seed gives the same weights, and the global RNG is left alone.
    before = torch.get_rng_state()
    again = build_student(teacher, spec, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


def test_student_checks_against_the_teachers_config(tiny_llama: Path) -> None:
    config = SourceModel.open(tiny_llama).config  # hidden 64, 4 heads, 2 KV heads, 2 layers
    with pytest.raises(SpecError, match=re.escape("layer 2 does not exist; the teacher has 2 layers (0..1)")):
        student_config_dict(config, StudentSpec(keep_layers=(0, 2)))
    with pytest.raises(SpecError, match=re.escape("hidden_size=64 (the teacher's) must be divisible by "
                                                  "student.num_attention_heads=3")):
        student_config_dict(config, StudentSpec(num_attention_heads=3))
    with pytest.raises(SpecError, match=re.escape("student.num_attention_heads=1 must be a multiple of "
                                                  "num_key_value_heads=2 (the teacher's)")):
        student_config_dict(config, StudentSpec(num_attention_heads=1))
    narrowed = student_config_dict(config, StudentSpec(hidden_size=32))
    assert narrowed["head_dim"] == 8
