"""The architecture families the toy-model factory can build, one declarative entry each.

Each family mirrors its real counterpart where a converter or runtime could tell the difference: the
pre-tokenizer split pattern, where the special tokens sit, whether BOS is added, the chat template and the
config fields. Adding a family means adding an entry here, not branching in the builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
_GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
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
    added_tokens: tuple[str, ...] = ()
    """SentencePiece families: special tokens appended after the learned vocabulary (Phi-3's chat tokens)."""
    sized_fields: Callable[[int], dict[str, Any]] = lambda head_dim: {}
    prefix_space: bool = True
    """SentencePiece families: a space in front of the text before tokenizing (Mistral, Phi-3: yes; Gemma: no)."""
    tiny_layers: int = 2
    """Layers of ``ToyModelSpec.tiny``: enough for one period of the family's layer pattern."""
    """Fields that follow the head size (given), as they do in the real checkpoints."""


def _gemma_attention(head_dim: int) -> dict[str, Any]:
    # Gemma 2/3 scale queries by query_pre_attn_scalar**-0.5, equal to the head size in the released 2B/9B/1B
    # models; llama.cpp scales by the head size itself, so a toy that differed would not mirror them.
    return {"query_pre_attn_scalar": head_dim}


_SENTENCEPIECE_TOKENS = ("<unk>", "<s>", "</s>")
_QWEN_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_LLAMA = Family(
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
)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
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
    # Llama 3.1/3.2: the same layout with "llama3" rotary scaling (llama.cpp stores it as a rope_freqs tensor).
    "llama3": replace(
        _LLAMA,
        config_fields={
            **_LLAMA.config_fields,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                # Llama 3.2 uses 8192 of its 131072 positions; 256 of the toy's 512 puts the head's rotary
                # wavelengths (6 to 10^5 tokens) in all three bands of the scaling: kept, smoothed, divided.
                "original_max_position_embeddings": 256,
            },
        },
    ),
    "qwen3": Family(
        arch="qwen3",
        tokenizer_kind="bpe",
        split_pattern=_QWEN2_SPLIT,
        special_tokens=_QWEN_TOKENS,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=_CHATML_TEMPLATE,
        config_fields={"rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "attention_bias": False},
    ),
    "smollm3": Family(
        arch="smollm3",
        tokenizer_kind="bpe",
        split_pattern=_LLAMA3_SPLIT,
        special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|end_of_text|>",
        chat_template=_CHATML_TEMPLATE,
        config_fields={"rope_theta": 5000000.0, "rms_norm_eps": 1e-6},
        # Every 4th layer has no rotary embedding (NoPE), as in SmolLM3-3B and as llama.cpp assumes.
        tiny_layers=4,
    ),
    "gemma2": Family(
        arch="gemma2",
        tokenizer_kind="sentencepiece",
        split_pattern="",
        special_tokens=_SENTENCEPIECE_TOKENS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        chat_template=_GEMMA_TEMPLATE,
        config_fields={
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 256,
        },
        sized_fields=_gemma_attention,
        prefix_space=False,
    ),
    "gemma3_text": Family(
        arch="gemma3_text",
        tokenizer_kind="sentencepiece",
        split_pattern="",
        special_tokens=_SENTENCEPIECE_TOKENS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        chat_template=_GEMMA_TEMPLATE,
        config_fields={
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "sliding_window": 256,
        },
        sized_fields=_gemma_attention,
        prefix_space=False,
        # Five sliding-window layers, then one global one, as the released models and as llama.cpp assumes.
        tiny_layers=6,
    ),
    "phi3": Family(
        arch="phi3",
        tokenizer_kind="sentencepiece",
        split_pattern="",
        special_tokens=_SENTENCEPIECE_TOKENS,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="</s>",
        added_tokens=("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
        chat_template=_PHI3_TEMPLATE,
        config_fields={"rope_theta": 10000.0, "rms_norm_eps": 1e-5, "sliding_window": None},
    ),
}
