"""The source model: a Hugging Face causal LM folder on disk, checked before any export step reads it.

Every load is ``local_files_only``: the export tool never reaches for a model hub.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.errors import SourceModelError, UnsupportedArchitectureError
from export.safetensors_info import parameter_count

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

def _supported() -> tuple[str, ...]:
    from edge_runtime.backends.gguf import ARCHITECTURES as GGUF
    from edge_runtime.backends.onnx import ARCHITECTURES as ONNX

    return tuple(sorted(GGUF | ONNX))


SUPPORTED_ARCHITECTURES = _supported()
"""``model_type`` values some export target handles (each target checks its own list again: GGUF
``export.gguf.architectures``, ONNX ``edge_runtime.backends.onnx.ARCHITECTURES``)."""


def _check_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise SourceModelError(
            f"{path} is not a readable safetensors file ({exc}); re-save the model with "
            "`model.save_pretrained(folder, safe_serialization=True)` or copy it again"
        ) from exc


@dataclass(frozen=True)
class SourceModel:
    """A validated model folder: config.json, safetensors weights and a tokenizer are present and readable."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike[str], supported: tuple[str, ...] = SUPPORTED_ARCHITECTURES) -> SourceModel:
        folder = Path(path)
        if not folder.is_dir():
            raise SourceModelError(f"{folder} is not a folder; pass the model folder that holds config.json")
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise SourceModelError(f"{folder} has no config.json; is it a Hugging Face model folder?")
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceModelError(f"{config_path} is not valid JSON: {exc}") from exc
        arch = config.get("model_type")
        if arch not in supported:
            raise UnsupportedArchitectureError(
                f"architecture {arch!r} of {folder} is not supported; supported: {', '.join(supported)}"
            )
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise SourceModelError(
                f"{folder} has no .safetensors weights (PyTorch .bin files are not read: re-save the model "
                "with safe_serialization=True)"
            )
        for weight_file in weights:
            _check_safetensors(weight_file)
        if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
            raise SourceModelError(f"{folder} has no tokenizer (tokenizer.json or tokenizer.model)")
        return cls(path=folder, config=config)

    @property
    def arch(self) -> str:
        return self.config["model_type"]

    @property
    def context_length(self) -> int:
        return int(self.config.get("max_position_embeddings", 2048))

    def kv_bytes_per_token(self, bytes_per_element: int) -> int:
        """KV-cache bytes one token of context costs: keys and values of every layer's KV heads."""
        heads = int(self.config["num_attention_heads"])
        kv_heads = int(self.config.get("num_key_value_heads") or heads)
        head_dim = int(self.config.get("head_dim") or self.config["hidden_size"] // heads)
        return 2 * int(self.config["num_hidden_layers"]) * kv_heads * head_dim * bytes_per_element

    def parameter_count(self) -> int:
        return parameter_count(self.path)

    def tokenizer_bytes(self) -> int:
        """Bytes of the tokenizer files a bundle copies from this folder (for disk-space estimates)."""
        from export.bundle_writer import TOKENIZER_FILES

        return sum((self.path / name).stat().st_size for name in TOKENIZER_FILES if (self.path / name).is_file())

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SourceModelError(f"cannot load the tokenizer of {self.path}: {exc}") from exc

    def _attention(self) -> dict[str, str]:
        # PyTorch's fused attention has no logit soft-capping, so transformers' "sdpa" path leaves Gemma 2's
        # out (on the tiny toy Gemma 2: logits 0.48 apart from "eager"); the reference must be the model as
        # defined, which its eager attention computes.
        return {"attn_implementation": "eager"} if self.config.get("attn_logit_softcapping") else {}

    def load_model(self, dtype: torch.dtype | None = None) -> PreTrainedModel:
        """The model in eval mode, in float32 unless ``dtype`` says otherwise."""
        import torch
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(
                self.path, local_files_only=True, dtype=dtype or torch.float32, **self._attention()
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise SourceModelError(f"cannot load the model in {self.path}: {exc}") from exc
        return model.eval()
