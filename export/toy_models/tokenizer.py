"""Train a byte-level BPE tokenizer the way the real Llama 3 / Qwen2 tokenizers are laid out."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from export.toy_models.corpus import corpus_lines
from export.toy_models.families import Family
from export.toy_models.spec import ToyModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def train_tokenizer(spec: ToyModelSpec, family: Family, folder: Path) -> PreTrainedTokenizerFast:
    """Train the family's kind of tokenizer on the generated corpus; files it needs beside tokenizer.json
    (a SentencePiece model) are written into ``folder``."""
    return _TRAINERS[family.tokenizer_kind](spec, family, folder)


def _sentencepiece(spec: ToyModelSpec, family: Family, folder: Path) -> PreTrainedTokenizerFast:
    """A SentencePiece BPE model with byte fallback, laid out as Mistral's: <unk>, <s>, </s> at ids 0-2."""
    import sentencepiece
    from transformers import LlamaTokenizerFast

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=corpus_lines(spec.corpus_lines, spec.seed),
        model_writer=model,
        vocab_size=spec.vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=family.prefix_space,
        allow_whitespace_only_pieces=True,
        num_threads=1,  # one thread: the same corpus always gives the same model
        minloglevel=2,
    )
    path = folder / "tokenizer.model"
    path.write_bytes(model.getvalue())
    tokenizer = LlamaTokenizerFast(
        vocab_file=str(path),
        bos_token=family.bos_token,
        eos_token=family.eos_token if family.eos_token in _SENTENCEPIECE_SPECIALS else "</s>",
        unk_token="<unk>",
        pad_token=family.pad_token,
        add_bos_token=True,
        legacy=False,
        add_prefix_space=family.prefix_space,  # as SentencePiece does (its add_dummy_prefix)
        chat_template=family.chat_template,
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    if family.added_tokens:
        # After the SentencePiece vocabulary, as Phi-3 appends its chat tokens at ids 32000 and up.
        tokenizer.add_special_tokens({"additional_special_tokens": list(family.added_tokens)})
        tokenizer.eos_token = family.eos_token
    return tokenizer


_SENTENCEPIECE_SPECIALS = ("<unk>", "<s>", "</s>")


def _byte_level_bpe(spec: ToyModelSpec, family: Family, folder: Path) -> PreTrainedTokenizerFast:
    """Learn ``spec.vocab_size`` byte-level BPE tokens, then append the family's special tokens and wrap the
    result as a transformers tokenizer with the family's chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(family.split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(spec.corpus_lines, spec.seed), trainer=trainer)
    # After the learned vocabulary, as in the real tokenizers (ids are not 0, 1, 2...).
    tokenizer.add_special_tokens(list(family.special_tokens))
    if family.bos_token is not None:
        bos_id = tokenizer.token_to_id(family.bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{family.bos_token} $A",
            pair=f"{family.bos_token} $A {family.bos_token} $B:1",
            special_tokens=[(family.bos_token, bos_id)],
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=family.bos_token,
        eos_token=family.eos_token,
        pad_token=family.pad_token,
        chat_template=family.chat_template,
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        # As the real Llama / Qwen2 tokenizers: no token_type_ids, which causal LMs do not take.
        model_input_names=["input_ids", "attention_mask"],
    )


_TRAINERS = {"bpe": _byte_level_bpe, "sentencepiece": _sentencepiece}
