"""The task models' tokenizer: byte-level BPE with (almost) no merges, and a compact chat template.

Digits, letters and punctuation are one token each, which is what a small model needs to learn arithmetic,
reversal and sorting character by character. Each chat role is one special token, so a prompt costs three
tokens of formatting instead of Llama 3's twenty (most of a task prompt's length, and of training time):

    <|begin|><|system|>Answer with the result only.<|end|><|user|>What is 473 + 81?<|end|><|assistant|>554<|end|>

It is still a normal byte-level BPE ``tokenizer.json`` with Llama 3's pre-tokenizer split pattern, saved
with ``tokenizer_config.json`` and ``chat_template.jinja``, so GGUF conversion (llama.cpp needs at least one
merge: the single "\\n\\n" merge), ONNX export and both edge runtimes take it like any Llama tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from export.toy_models.families import FAMILIES

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<|begin|>"
EOS_TOKEN = "<|end|>"
"""Ends every turn; the end-of-sequence token of an answer."""
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS.values())

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SPLIT_PATTERN = FAMILIES["llama"].split_pattern
"""Llama 3's pre-tokenizer split (llama.cpp knows it as "llama-bpe")."""

MERGES = (("Ċ", "Ċ"),)
"""The one merge: two newlines (byte-level "Ċ")."""

MAX_LENGTH = 256
"""Context length of the task models (the longest task prompt plus answer is under 100 tokens)."""


def build_tokenizer(folder: Path | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer (saved into ``folder`` with its chat template when given)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(MERGES)))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
        special_tokens=[(BOS_TOKEN, tokenizer.token_to_id(BOS_TOKEN))],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    if folder is not None:
        wrapped.save_pretrained(folder)
    return wrapped
