"""The shapes of the task models, and the untrained starting point the teacher is trained from.

The teacher starts as a randomly initialised Llama folder (config, safetensors weights, the task tokenizer
and its chat template) that ``tandem export distill`` can read like any model folder: training the teacher
is a distillation run with no teacher term (alpha_kl = 0), i.e. plain cross-entropy on the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.errors import SpecError
from export.tasks.tokenizer import MAX_LENGTH, build_tokenizer

ROPE_THETA = 10000.0
RMS_NORM_EPS = 1e-5


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    intermediate: int

    def __post_init__(self) -> None:
        if min(self.layers, self.hidden, self.heads, self.intermediate) < 1:
            raise SpecError(f"model shape {self}: every size must be a positive integer")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise SpecError(f"model shape {self}: hidden must split into heads of an even size")


def write_untrained_model(folder: Path, shape: ModelShape, seed: int) -> Path:
    """A random-initialised Llama of ``shape`` with the task tokenizer, saved into ``folder`` (which must
    exist and be empty, e.g. a staging folder)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=True,
        rope_theta=ROPE_THETA,
        rms_norm_eps=RMS_NORM_EPS,
        attention_bias=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
