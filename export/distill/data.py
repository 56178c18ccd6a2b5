"""Training text: read a local file, tokenize it with the teacher's tokenizer, pack it, split off held-out text.

- Text files: one document per non-empty line (``text_mode="lines"``) or the whole file as one document
  (``"whole"``). JSONL files (``.jsonl``): one JSON object per non-empty line with a string "text" field.
- Each document is encoded as the tokenizer encodes a prompt (with BOS where the family adds one) and
  followed by the EOS token, then all documents are concatenated and cut into sequences of ``seq_len``
  tokens (the incomplete tail is dropped).
- The held-out split is the *last* ``eval_fraction`` of the sequences (at least one): deterministic, and no
  token of it is ever trained on.
- Chat examples (``text_mode="chat"``, a ``.jsonl`` file with a "messages" list per line, the last message
  the assistant's answer): each conversation is rendered with the teacher's chat template, is one sequence
  on its own (padded to ``seq_len``, never packed with another) and carries a target mask that is 1 on the
  answer's tokens (its end-of-turn token included), so training scores the answers only.
- Batches come from ``batch_indices(step)``: epoch ``e`` visits the training sequences in a permutation
  drawn from ``seed`` and ``e``, so the batch of any step is known without replaying the run (which is what
  lets a resumed run pick up exactly where the checkpoint stopped).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.errors import SpecError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


class DataError(SpecError):
    """The training text is missing, unreadable, malformed (the message names the line) or too short."""


def read_documents(path: str | os.PathLike[str], text_mode: str = "lines") -> list[str]:
    """The documents of a text or JSONL file (JSONL when the name ends in ``.jsonl``)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data={file}: no such file; pass a text file or a .jsonl file with a \"text\" field")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data={file} is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from exc
    except OSError as exc:
        raise DataError(f"data={file} cannot be read: {exc.strerror or exc}") from exc
    if file.suffix.lower() == ".jsonl":
        documents = _jsonl_documents(file, text)
    elif text_mode == "whole":
        documents = [text] if text.strip() else []
    else:
        documents = [line for line in text.splitlines() if line.strip()]
    if not documents:
        raise DataError(f"data={file} holds no text; give a file with at least a few documents")
    return documents


def _jsonl_records(file: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) of each non-blank line; DataError names the first line that is not JSON."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file} line {number} is not valid JSON ({exc.msg}); fix or remove that line") from exc


def _jsonl_documents(file: Path, text: str) -> list[str]:
    documents = []
    for number, record in _jsonl_records(file, text):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(
                f"{file} line {number} has no string \"text\" field; every line must be an object like "
                '{"text": "..."}'
            )
        if record["text"].strip():
            documents.append(record["text"])
    return documents


def tokenize_documents(tokenizer: PreTrainedTokenizerBase, documents: Sequence[str]) -> list[int]:
    """One token stream: each document as the tokenizer encodes it, then EOS."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(documents), add_special_tokens=True)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    return stream


def read_chat_examples(path: str | os.PathLike[str]) -> list[list[dict[str, str]]]:
    """The conversations of a JSONL file: one object per line with a "messages" list of {"role", "content"}
    objects whose last one is the assistant's answer (the training target)."""
    file = Path(path)
    if file.suffix.lower() != ".jsonl":
        raise DataError(
            f"data={file}: chat examples come as a .jsonl file with a \"messages\" list per line "
            '(e.g. {"messages": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]})'
        )
    if not file.is_file():
        raise DataError(f"data={file}: no such file; pass a .jsonl file with a \"messages\" list per line")
    try:
        text = file.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"data={file} cannot be read as UTF-8 text: {exc}") from exc
    examples = []
    for number, record in _jsonl_records(file, text):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not (
            isinstance(messages, list) and len(messages) >= 2
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages)
            and messages[-1]["role"] == "assistant"
        ):
            raise DataError(
                f"{file} line {number} needs a \"messages\" list of {{\"role\", \"content\"}} objects (at least a "
                "prompt and the assistant's answer, which comes last)"
            )
        examples.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not examples:
        raise DataError(f"data={file} holds no examples; give a file with at least a few conversations")
    return examples


def encode_chats(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Sequence[dict[str, str]]]
) -> list[tuple[list[int], list[int]]]:
    """(token ids, target mask) of each conversation, rendered with the tokenizer's chat template: the mask
    is 1 on the tokens that follow the prompt (the final assistant turn), 0 on the prompt's."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("text_mode=chat needs a teacher whose tokenizer has a chat template")
    prompts = tokenizer.apply_chat_template([list(e[:-1]) for e in examples], tokenize=False,
                                            add_generation_prompt=True)
    whole = tokenizer.apply_chat_template([list(e) for e in examples], tokenize=False)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
    encoded = []
    for index, (prompt, ids) in enumerate(zip(prompt_ids, whole_ids, strict=True)):
        if ids[: len(prompt)] != prompt or len(ids) == len(prompt):
            raise DataError(
                f"example {index + 1}: the chat template does not render the prompt as a prefix of the whole "
                "conversation, so the answer's tokens cannot be told apart"
            )
        encoded.append((list(ids), [0] * len(prompt) + [1] * (len(ids) - len(prompt))))
    return encoded


@dataclass(frozen=True)
class PackedData:
    """Fixed-length training and held-out sequences: cut from one token stream, or one chat example each
    (padded, with target masks)."""

    train: list[list[int]]
    held_out: list[list[int]]
    seq_len: int
    dropped_tokens: int
    """Tokens of the incomplete tail that fit no sequence."""
    train_masks: list[list[int]] | None = None
    """Chat examples: 1 where a token is a training target (the answer), per training sequence."""
    held_out_masks: list[list[int]] | None = None

    @property
    def held_out_tokens(self) -> list[int]:
        return [token for sequence in self.held_out for token in sequence]

    @property
    def train_tokens(self) -> int:
        return len(self.train) * self.seq_len

    def held_out_windows(self, max_windows: int | None = None) -> list[list[int]]:
        """Windows to score the held-out perplexity on: the packed stream cut at ``seq_len``, or each held-out
        chat example without its padding."""
        if self.held_out_masks is None:
            from export.quality import eval_windows

            return eval_windows(self.held_out_tokens, self.seq_len, max_windows)
        windows = [
            sequence[: max(i for i, flag in enumerate(mask) if flag) + 1]
            for sequence, mask in zip(self.held_out, self.held_out_masks, strict=True)
        ]
        return windows[:max_windows] if max_windows else windows

    def digest(self) -> str:
        """Hash of the training sequences: a checkpoint is only resumed on the same data."""
        hasher = hashlib.sha256()
        for sequence in self.train:
            hasher.update(json.dumps(sequence).encode())
        for mask in self.train_masks or ():
            hasher.update(json.dumps(mask).encode())
        return hasher.hexdigest()


def pack(token_ids: Sequence[int], seq_len: int, eval_fraction: float) -> PackedData:
    """Cut ``token_ids`` into ``seq_len`` sequences; the last ``eval_fraction`` of them (at least one) is
    held out. Raises DataError when there is not at least one sequence for each part."""
    if seq_len < 2:
        raise SpecError(f"seq_len={seq_len} must be at least 2 tokens")
    if not 0 < eval_fraction < 1:
        raise SpecError(f"eval_fraction={eval_fraction} must be between 0 and 1 (exclusive)")
    count = len(token_ids) // seq_len
    sequences = [list(token_ids[i * seq_len : (i + 1) * seq_len]) for i in range(count)]
    held = max(1, round(count * eval_fraction))
    if count - held < 1:
        raise DataError(
            f"the data gives {len(token_ids)} tokens, {count} sequence(s) of seq_len={seq_len}: too few for a "
            f"training part and a held-out part (eval_fraction={eval_fraction}); give more text or lower seq_len"
        )
    return PackedData(
        train=sequences[: count - held],
        held_out=sequences[count - held :],
        seq_len=seq_len,
        dropped_tokens=len(token_ids) - count * seq_len,
    )


def pad_examples(
    examples: Sequence[tuple[list[int], list[int]]], seq_len: int, eval_fraction: float, pad_id: int
) -> PackedData:
    """One padded sequence per chat example (``encode_chats``); the last ``eval_fraction`` of the examples
    (at least one) is held out. Raises DataError naming an example longer than ``seq_len``."""
    if seq_len < 2:
        raise SpecError(f"seq_len={seq_len} must be at least 2 tokens")
    if not 0 < eval_fraction < 1:
        raise SpecError(f"eval_fraction={eval_fraction} must be between 0 and 1 (exclusive)")
    for index, (ids, _) in enumerate(examples):
        if len(ids) > seq_len:
            raise DataError(
                f"chat example {index + 1} has {len(ids)} tokens, more than seq_len={seq_len}; raise seq_len or "
                "shorten the example"
            )
    held = max(1, round(len(examples) * eval_fraction))
    if len(examples) - held < 1:
        raise DataError(
            f"{len(examples)} chat example(s) are too few for a training part and a held-out part "
            f"(eval_fraction={eval_fraction}); give more examples"
        )
    sequences = [ids + [pad_id] * (seq_len - len(ids)) for ids, _ in examples]
    masks = [mask + [0] * (seq_len - len(mask)) for _, mask in examples]
    cut = len(examples) - held
    return PackedData(
        train=sequences[:cut], held_out=sequences[cut:], seq_len=seq_len, dropped_tokens=0,
        train_masks=masks[:cut], held_out_masks=masks[cut:],
    )


def load_data(path: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase, seq_len: int,
              eval_fraction: float, text_mode: str = "lines") -> PackedData:
    return pack(tokenize_documents(tokenizer, read_documents(path, text_mode)), seq_len, eval_fraction)


class BatchSchedule:
    """Which training sequences each step trains on: a fresh seeded permutation per epoch, batches taken in
    order across epoch boundaries. Stateless: ``batch_indices(step)`` depends only on (seed, step)."""

    def __init__(self, sequences: int, batch_size: int, seed: int) -> None:
        self.sequences = sequences
        self.batch_size = batch_size
        self.seed = seed
        self._permutations: dict[int, list[int]] = {}

    def _permutation(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            if len(self._permutations) > 2:
                self._permutations.clear()
            self._permutations[epoch] = torch.randperm(self.sequences, generator=generator).tolist()
        return self._permutations[epoch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of the first sample of ``step`` (steps count from 0)."""
        return divmod(step * self.batch_size, self.sequences)

    def batch_indices(self, step: int) -> list[int]:
        first = step * self.batch_size
        return [
            self._permutation(k // self.sequences)[k % self.sequences] for k in range(first, first + self.batch_size)
        ]

    def epochs(self, steps: int) -> float:
        return steps * self.batch_size / self.sequences


def batch_tensor(data: PackedData, indices: Sequence[int]) -> torch.Tensor:
    import torch

    return torch.tensor([data.train[i] for i in indices], dtype=torch.long)


def batch_mask(data: PackedData, indices: Sequence[int]) -> torch.Tensor | None:
    """The target mask of a batch (chat examples), or None when every token is a target."""
    import torch

    if data.train_masks is None:
        return None
    return torch.tensor([data.train_masks[i] for i in indices], dtype=torch.float32)
