"""Read a model folder's tokenizer into what GGUF stores: tokens, their types, merges or scores, special ids.

Two tokenizer kinds: byte-level BPE (tokenizer.json, GGUF model "gpt2") and SentencePiece
(tokenizer.model, GGUF model "llama"). For BPE, llama.cpp must also know how text is split before merging
(the "pre-tokenizer"); it is recognised from the split pattern in tokenizer.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from export.errors import ConversionError

# Split patterns of public tokenizers -> llama.cpp's name for that pre-tokenizer.
_PRE_TOKENIZERS = {
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ): "llama-bpe",
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ): "qwen2",
}


@dataclass
class Vocabulary:
    model: str
    """GGUF tokenizer model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)."""
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)
    """"bos" / "eos" / "pad" / "unk" -> id, where the tokenizer defines them."""
    add_bos: bool = False
    chat_template: str | None = None

    def write_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.merges:
            writer.add_token_merges(self.merges)
        if self.scores:
            writer.add_token_scores(self.scores)
        adders = {
            "bos": writer.add_bos_token_id,
            "eos": writer.add_eos_token_id,
            "pad": writer.add_pad_token_id,
            "unk": writer.add_unk_token_id,
        }
        for role, token_id in self.special_ids.items():
            adders[role](token_id)
        writer.add_add_bos_token(self.add_bos)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _chat_template(folder: Path, config: dict) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def _special_ids(config: dict, token_to_id: dict[str, int]) -> dict[str, int]:
    ids = {}
    for role in ("bos", "eos", "pad", "unk"):
        token = config.get(f"{role}_token")
        if isinstance(token, dict):  # serialized AddedToken
            token = token.get("content")
        if token is not None and token in token_to_id:
            ids[role] = token_to_id[token]
    return ids


def _bpe(folder: Path, config: dict) -> Vocabulary:
    data = json.loads((folder / "tokenizer.json").read_text())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ConversionError(f"tokenizer.json holds a {model.get('type')!r} model; only BPE converts to GGUF")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {entry["content"]: entry for entry in data.get("added_tokens", [])}
    for content, entry in added.items():
        vocab[content] = entry["id"]
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, token_id in vocab.items():
        tokens[token_id] = token
        if token in added:
            types[token_id] = gguf.TokenType.CONTROL if added[token]["special"] else gguf.TokenType.USER_DEFINED
        else:
            types[token_id] = gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = _pre_tokenizer(data.get("pre_tokenizer"))
    post = json.dumps(data.get("post_processor") or {})
    special_ids = _special_ids(config, vocab)
    add_bos = "bos" in special_ids and tokens[special_ids["bos"]] in post
    return Vocabulary(
        model="gpt2", pre=pre, tokens=tokens, token_types=[int(t) for t in types], merges=merges,
        special_ids=special_ids, add_bos=add_bos, chat_template=_chat_template(folder, config),
    )


def _pre_tokenizer(pre_tokenizer: dict | None) -> str:
    steps = (pre_tokenizer or {}).get("pretokenizers") or [pre_tokenizer or {}]
    for step in steps:
        if step.get("type") == "Split":
            pattern = step.get("pattern", {}).get("Regex")
            if pattern in _PRE_TOKENIZERS:
                return _PRE_TOKENIZERS[pattern]
            raise ConversionError(
                "the tokenizer's pre-tokenizer split pattern is not one llama.cpp knows; supported: "
                f"{', '.join(sorted(_PRE_TOKENIZERS.values()))} (and plain GPT-2 byte-level)"
            )
        if step.get("type") == "ByteLevel" and step.get("use_regex", True):
            return "gpt-2"
    raise ConversionError("the tokenizer has no byte-level pre-tokenizer; it cannot be converted to GGUF")


def _sentencepiece(folder: Path, config: dict) -> Vocabulary:
    try:
        from sentencepiece import SentencePieceProcessor
    except ModuleNotFoundError as exc:
        raise ConversionError("SentencePiece tokenizers need the `sentencepiece` package") from exc
    processor = SentencePieceProcessor()
    try:
        processor.LoadFromFile(str(folder / "tokenizer.model"))
    except (OSError, RuntimeError) as exc:
        raise ConversionError(f"tokenizer.model in {folder} is not a readable SentencePiece model") from exc
    tokens, scores, types = [], [], []
    for token_id in range(processor.vocab_size()):
        tokens.append(processor.IdToPiece(token_id))
        scores.append(processor.GetScore(token_id))
        if processor.IsUnknown(token_id):
            types.append(gguf.TokenType.UNKNOWN)
        elif processor.IsControl(token_id):
            types.append(gguf.TokenType.CONTROL)
        elif processor.IsUnused(token_id):
            types.append(gguf.TokenType.UNUSED)
        elif processor.IsByte(token_id):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    token_to_id = {token: i for i, token in enumerate(tokens)}
    return Vocabulary(
        model="llama", pre="default", tokens=tokens, token_types=[int(t) for t in types], scores=scores,
        special_ids=_special_ids(config, token_to_id), add_bos=bool(config.get("add_bos_token", True)),
        chat_template=_chat_template(folder, config),
    )


def read_vocabulary(folder: Path) -> Vocabulary:
    """The tokenizer of a model folder, ready for GGUF. Raises ConversionError when it cannot be converted."""
    config = _tokenizer_config(folder)
    if (folder / "tokenizer.model").is_file():
        return _sentencepiece(folder, config)
    if (folder / "tokenizer.json").is_file():
        return _bpe(folder, config)
    raise ConversionError(f"{folder} has neither tokenizer.json (BPE) nor tokenizer.model (SentencePiece)")
