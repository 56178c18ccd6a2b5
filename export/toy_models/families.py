"""The architecture families the toy-model factory can build, one declarative entry each.

Each family mirrors its real counterpart where a converter or runtime could tell the difference: the
pre-tokenizer split pattern, where the special tokens sit, whether BOS is added, the chat template and the
config fields. Adding a family means adding an entry here, not branching in the builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Split patterns of the public Llama 3 and Qwen2 tokenizers (they differ in how digits are grouped).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_MISTRAL_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% else %}[INST] {{ message['content'] }} [/INST]{% endif %}"
    "{% endfor %}"
)
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """How one architecture family is laid out on disk."""

    arch: str
    """The `model_type` in config.json."""
    tokenizer_kind: str
    """"bpe": byte-level BPE trained with `tokenizers` (tokenizer.json only); "sentencepiece": a SentencePiece
    BPE model with byte fallback (tokenizer.model, plus its tokenizer.json conversion), as Mistral ships."""
    split_pattern: str
    """Pre-tokenizer split pattern of byte-level BPE families ("" for SentencePiece)."""
    special_tokens: tuple[str, ...]
    """BPE: appended after the learned vocabulary, as in the real tokenizers. SentencePiece: ids 0, 1, 2."""
    bos_token: str | None
    """Added in front of every encoded text when set (Llama 3 does, Qwen2 does not)."""
    eos_token: str
    """The token that ends an assistant turn."""
    pad_token: str
    chat_template: str
    config_fields: dict[str, Any] = field(default_factory=dict)
    """Architecture-specific config.json fields, on top of the sizes every family shares."""


FAMILIES: dict[str, Family] = {
    "llama": Family(
        arch="llama",
        tokenizer_kind="bpe",
        split_pattern=_LLAMA3_SPLIT,
        special_tokens=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        chat_template=_LLAMA3_TEMPLATE,
        config_fields={"rope_theta": 500000.0, "rms_norm_eps": 1e-5, "attention_bias": False},
    ),
    "qwen2": Family(
        arch="qwen2",
        tokenizer_kind="bpe",
        split_pattern=_QWEN2_SPLIT,
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=_CHATML_TEMPLATE,
        config_fields={"rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "use_sliding_window": False},
    ),
    "mistral": Family(
        arch="mistral",
        tokenizer_kind="sentencepiece",
        split_pattern="",
        special_tokens=("<unk>", "<s>", "</s>"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        chat_template=_MISTRAL_TEMPLATE,
        config_fields={"rope_theta": 10000.0, "rms_norm_eps": 1e-5, "sliding_window": None},
    ),
}
