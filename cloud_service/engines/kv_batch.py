"""The KV cache of a batch of sequences of different lengths, for continuous batching on transformers.

Rows are left-padded to one shared length T: row i holds ``pad_i`` empty positions, then its tokens. Its
attention mask has zeros over the padding and each row's position ids count only real tokens, so a padded
row computes exactly what it would compute alone. Sequences join with their prefilled cache (the narrower
side is left-padded to the wider); a finished one leaves by row selection; columns that are
padding in every row are trimmed away. Requests admitted together are prefilled in one forward pass, laid out
the same way (``prefill_inputs``).

The model gets its attention mask prebuilt here, as a (batch, 1, queries, T) boolean tensor, whenever every
layer attends over the whole context (``prebuilt_mask_fits``). Given only the 2D padding mask, transformers
rebuilds the 4D mask in every forward pass with ``torch.vmap`` as soon as one row is padded, which on a
small model costs as much as the decode step itself, and rows are padded whenever requests arrive at
different times (nearly always on a server). With a sliding window
shorter than the context the 2D mask is passed and transformers builds the windowed mask.

Shapes: keys/values per layer (batch, kv_heads, T, head_dim); mask (batch, T).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache

FULL_ATTENTION = "full_attention"


def prebuilt_mask_fits(config: Any, context_length: int) -> bool:
    """Whether a plain causal + padding mask is the model's whole mask for sequences up to ``context_length``:
    no layer type other than full attention, and no sliding window shorter than the context."""
    if any(kind != FULL_ATTENTION for kind in getattr(config, "layer_types", None) or ()):
        return False
    window = getattr(config, "sliding_window", None)
    return not window or window >= context_length


def decode_mask(mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, 1, T) bool: the one new token of each row attends to that row's real tokens."""
    return mask.bool()[:, None, None, :]


def prefill_mask(mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, L, L) bool from the (batch, L) padding mask: causal over each row's real tokens. A padding
    query attends to itself only (its output is discarded; a row with no key at all would give NaN)."""
    import torch

    width = int(mask.shape[1])
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    return (causal[None] & mask.bool()[:, None, :] | torch.eye(width, dtype=torch.bool)[None])[:, None]


def _left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    import torch

    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


@dataclass
class KvBatch:
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None
    """(batch, T) int64: 1 over real tokens."""
    lengths: list[int] = field(default_factory=list)
    """Real tokens per row (= the next token's position id)."""
    prebuilt_mask: bool = False
    """Give the model the 4D mask built here (see the module docstring and ``prebuilt_mask_fits``)."""

    @property
    def size(self) -> int:
        return len(self.lengths)

    @property
    def width(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def add(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append sequences prefilled together: their cache and (n, L) mask, left-padded like this batch."""
        import torch
        from transformers import DynamicCache

        lengths = [int(n) for n in mask.sum(dim=1)]
        if self.cache is None:
            self.cache, self.mask, self.lengths = cache, mask, lengths
            return
        assert self.mask is not None
        width, theirs = max(self.width, int(mask.shape[1])), int(mask.shape[1])
        layers = []
        for (keys, values), (new_keys, new_values) in zip(_layers(self.cache), _layers(cache), strict=True):
            layers.append((
                torch.cat([_left_pad(keys, width - self.width, 2), _left_pad(new_keys, width - theirs, 2)]),
                torch.cat([_left_pad(values, width - self.width, 2), _left_pad(new_values, width - theirs, 2)]),
            ))
        self.cache = DynamicCache(layers)
        self.mask = torch.cat([_left_pad(self.mask, width - self.width, 1), _left_pad(mask, width - theirs, 1)])
        self.lengths += lengths

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), then trim columns that are padding everywhere."""
        import torch
        from transformers import DynamicCache

        if not rows:
            self.cache, self.mask, self.lengths = None, None, []
            return
        assert self.cache is not None and self.mask is not None
        index = torch.tensor(rows, dtype=torch.long)
        self.lengths = [self.lengths[i] for i in rows]
        drop = self.width - max(self.lengths)
        self.mask = self.mask.index_select(0, index)[:, drop:]
        self.cache = DynamicCache([
            (keys.index_select(0, index)[:, :, drop:], values.index_select(0, index)[:, :, drop:])
            for keys, values in _layers(self.cache)
        ])

    def step_inputs(self, tokens: list[int]) -> dict[str, torch.Tensor]:
        """Model inputs for one decode step: each row's last token at its own position."""
        import torch

        assert self.mask is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=1)
        inputs = {
            "input_ids": torch.tensor(tokens, dtype=torch.long)[:, None],
            "attention_mask": decode_mask(self.mask) if self.prebuilt_mask else self.mask,
            "position_ids": torch.tensor(self.lengths, dtype=torch.long)[:, None],
            "past_key_values": self.cache,
        }
        self.lengths = [length + 1 for length in self.lengths]
        return inputs

    def tokens(self) -> int:
        return sum(self.lengths)


def prefill_inputs(prompts: list[list[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Model inputs that prefill several prompts in one forward pass, left-padded to the longest. The
    ``attention_mask`` is the (n, L) padding mask; ``prefill_mask`` makes the 4D one."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    positions = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        start = width - len(prompt)
        ids[row, start:] = torch.tensor(prompt, dtype=torch.long)
        mask[row, start:] = 1
        positions[row, start:] = torch.arange(len(prompt))
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def select_rows(cache: DynamicCache, rows: list[int]) -> DynamicCache:
    """A cache holding only these batch rows."""
    import torch
    from transformers import DynamicCache

    index = torch.tensor(rows, dtype=torch.long)
    return DynamicCache([(k.index_select(0, index), v.index_select(0, index)) for k, v in _layers(cache)])
