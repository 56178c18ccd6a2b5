"""The student model, made from the teacher: a subset of its layers, or a smaller config with random weights.

Both kinds keep the teacher's architecture class, tokenizer, vocabulary, special-token ids and rotary
settings, so the student is a drop-in model folder for every later export step. Llama, Mistral and Qwen2
share the decoder layout (``model.embed_tokens``, ``model.layers.N``, ``model.norm``, ``lm_head``) that
layer copying relies on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from export.distill.config import StudentSpec
from export.errors import SpecError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.*)$")


def _merged(teacher: dict[str, Any], spec: StudentSpec, name: str) -> tuple[int, str]:
    """A size of the student and how to name it in an error (the student's field or the teacher's value)."""
    if getattr(spec, name) is not None:
        return int(getattr(spec, name)), f"student.{name}={getattr(spec, name)}"
    value = teacher.get(name)
    if name == "num_key_value_heads" and value is None:
        value = teacher["num_attention_heads"]
    return int(value), f"{name}={value} (the teacher's)"


def student_config_dict(teacher_config: dict[str, Any], spec: StudentSpec) -> dict[str, Any]:
    """The student's config.json fields, from the teacher's (``to_dict()`` form) and ``spec``.

    Raises SpecError naming the field when the merged sizes are inconsistent or a kept layer does not exist.
    """
    config = dict(teacher_config)
    teacher_layers = int(teacher_config["num_hidden_layers"])
    if spec.keep_layers is not None:
        missing = [index for index in spec.keep_layers if index >= teacher_layers]
        if missing:
            raise SpecError(
                f"student.keep_layers={list(spec.keep_layers)}: layer {missing[0]} does not exist; the teacher has "
                f"{teacher_layers} layers (0..{teacher_layers - 1})"
            )
        config["num_hidden_layers"] = len(spec.keep_layers)
        if isinstance(config.get("layer_types"), list):
            config["layer_types"] = [teacher_config["layer_types"][index] for index in spec.keep_layers]
        return config

    hidden, hidden_name = _merged(teacher_config, spec, "hidden_size")
    heads, heads_name = _merged(teacher_config, spec, "num_attention_heads")
    kv_heads, kv_name = _merged(teacher_config, spec, "num_key_value_heads")
    if hidden % heads:
        raise SpecError(f"{hidden_name} must be divisible by {heads_name}; change the student's sizes")
    if (hidden // heads) % 2:
        raise SpecError(
            f"head size {hidden // heads} ({hidden_name} / {heads_name}) must be even for the rotary embedding"
        )
    if heads % kv_heads:
        raise SpecError(f"{heads_name} must be a multiple of {kv_name}; change the student's sizes")
    config.update(spec.overrides)
    config["num_key_value_heads"] = kv_heads
    if config.get("head_dim") is not None and (spec.hidden_size is not None or spec.num_attention_heads is not None):
        config["head_dim"] = hidden // heads
    if "layer_types" in config and config["num_hidden_layers"] != teacher_layers:
        # Rebuilt by the config class for the new depth (all "full_attention" unless sliding windows are on).
        del config["layer_types"]
    return config


def student_config(teacher_config: PretrainedConfig, spec: StudentSpec) -> PretrainedConfig:
    return type(teacher_config).from_dict(student_config_dict(teacher_config.to_dict(), spec))


def _kept_state_dict(teacher_state: dict[str, torch.Tensor], keep_layers: tuple[int, ...]) -> dict[str, torch.Tensor]:
    renumber = {old: new for new, old in enumerate(keep_layers)}
    kept = {}
    for key, tensor in teacher_state.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            kept[key] = tensor.detach().clone()
        elif int(match.group(1)) in renumber:
            kept[f"model.layers.{renumber[int(match.group(1))]}.{match.group(2)}"] = tensor.detach().clone()
    return kept


def build_student(teacher: PreTrainedModel, spec: StudentSpec, seed: int) -> PreTrainedModel:
    """A float32 student in train mode. Random weights come from ``seed`` alone (the global RNG is left as
    it was); kept layers are exact copies of the teacher's."""
    import torch
    from transformers import AutoModelForCausalLM

    config = student_config(teacher.config, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if spec.keep_layers is not None:
        state = _kept_state_dict(teacher.state_dict(), spec.keep_layers)
        student.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return student.float().train()
