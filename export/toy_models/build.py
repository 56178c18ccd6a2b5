"""Write a toy Hugging Face model folder: config, safetensors weights, tokenizer, chat template.

Folders appear atomically (``export.atomic``): an interrupted build never leaves a half-written model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from export.atomic import staged_folder
from export.toy_models.families import FAMILIES, Family
from export.toy_models.spec import ToyModelSpec
from export.toy_models.tokenizer import train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

BUILD_STEPS = ("tokenizer", "weights", "save")
"""The steps reported to ``on_step``, in order."""

StepCallback = Callable[[str], None]


def _model(spec: ToyModelSpec, family: Family, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    head_dim = spec.hidden_size // spec.num_heads
    config = AutoConfig.for_model(
        family.arch,
        head_dim=head_dim,
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=spec.dtype,
        **family.config_fields,
        **family.sized_fields(head_dim),
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Our own initialisation, in a fixed order from one seeded generator: the bytes depend on the spec,
    # not on how a transformers version happens to initialise modules.
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator) * spec.init_std
            # Norm scales near 1 (not exactly 1, so a converter that drops or misplaces one is caught).
            is_norm_scale = param.ndim == 1 and "norm" in name
            param.copy_(1.0 + noise if is_norm_scale else noise)
    return model.to(getattr(torch, spec.dtype)).eval()


def _write(spec: ToyModelSpec, folder: Path, on_step: StepCallback) -> None:
    family = FAMILIES[spec.arch]
    on_step("tokenizer")
    tokenizer = train_tokenizer(spec, family, folder)
    on_step("weights")
    model = _model(spec, family, tokenizer)
    on_step("save")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _no_step(_: str) -> None:
    pass


def build_toy_model(
    spec: ToyModelSpec, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
    on_step: StepCallback = _no_step,
) -> Path:
    """Build the model described by ``spec`` into ``out_dir`` (atomically) and return its path.

    Raises OutputExistsError when ``out_dir`` exists, unless ``overwrite``. ``on_step`` is called with
    each name of BUILD_STEPS as the build reaches it (for progress display).
    """
    with staged_folder(out_dir, overwrite=overwrite) as staging:
        _write(spec, staging, on_step)
    return Path(out_dir)


def cached_toy_model(
    spec: ToyModelSpec, cache_root: str | os.PathLike[str], *, on_step: StepCallback = _no_step
) -> Path:
    """Return the folder of ``spec`` under ``cache_root``, building it on first use.

    The folder name carries the spec's digest, so a changed spec or factory version builds anew. Safe
    when several processes ask at once: the first complete build wins and the others reuse it.
    """
    path = Path(cache_root) / f"{spec.name}-{spec.digest()[:12]}"
    if path.is_dir():
        return path
    try:
        return build_toy_model(spec, path, on_step=on_step)
    except OSError:
        # Another process renamed its finished build into place between our check and our rename.
        if path.is_dir():
            return path
        raise
