"""Hugging Face folder -> GGUF (F32 or F16), written with the gguf library's writer and tensor name maps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from export.errors import ConversionError, UnsupportedArchitectureError
from export.gguf.architectures import ARCHITECTURES, GgufArchitecture
from export.gguf.vocab import Vocabulary, read_vocabulary
from export.source import SourceModel

OUTTYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)


def interleave_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows from HF's rotary layout (each head's first halves, then second halves)
    to llama.cpp's (pairs side by side). Works for weights (rows x cols) and biases (rows,)."""
    head_dim = weight.shape[0] // n_heads
    return (
        weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _architecture(source: SourceModel) -> GgufArchitecture:
    if source.arch not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {source.arch!r} has no GGUF converter; supported: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[source.arch]


def _write_hyperparameters(writer: gguf.GGUFWriter, source: SourceModel, outtype: str) -> None:
    cfg = source.config
    if cfg.get("rope_scaling"):
        raise ConversionError(
            f"rope_scaling={cfg['rope_scaling']!r} is not supported by the GGUF converter yet; "
            "models with plain rotary embeddings convert"
        )
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    writer.add_name(source.path.name)
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_file_type(OUTTYPES[outtype])


def _padded(vocab: Vocabulary, n_vocab: int) -> Vocabulary:
    """Pad the token list to the model's embedding rows (models often round their vocab up)."""
    if len(vocab.tokens) > n_vocab:
        raise ConversionError(
            f"the tokenizer has {len(vocab.tokens)} tokens but the model only {n_vocab} embedding rows"
        )
    missing = n_vocab - len(vocab.tokens)
    vocab.tokens += [f"[PAD{len(vocab.tokens) + i}]" for i in range(missing)]
    vocab.token_types += [int(gguf.TokenType.UNUSED)] * missing
    if vocab.scores:
        vocab.scores += [0.0] * missing
    return vocab


def _tensors(source: SourceModel, arch: GgufArchitecture, outtype: str):
    """Yield (gguf name, array) for every weight, renamed, reordered and cast as llama.cpp expects."""
    from safetensors import safe_open

    cfg = source.config
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    names = gguf.get_tensor_name_map(arch.gguf_arch, int(cfg["num_hidden_layers"]))
    for path in sorted(source.path.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if hf_name.endswith(_SKIPPED_SUFFIXES):
                    continue
                gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ConversionError(f"tensor {hf_name!r} of {path.name} has no GGUF counterpart")
                data = handle.get_tensor(hf_name).float().numpy()
                if arch.unpermute_qk and ".q_proj." in hf_name:
                    data = interleave_rotary_rows(data, heads)
                elif arch.unpermute_qk and ".k_proj." in hf_name:
                    data = interleave_rotary_rows(data, kv_heads)
                if outtype == "f16" and data.ndim > 1:
                    data = data.astype(np.float16)
                yield gguf_name, np.ascontiguousarray(data)


def convert_to_gguf(
    source: SourceModel, out_file: Path, outtype: str = "f16", on_tensor: Callable[[str], None] | None = None
) -> Path:
    """Write ``source`` as one GGUF file (``outtype`` "f32" or "f16"; 1-D tensors stay F32)."""
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    arch = _architecture(source)
    vocab = _padded(read_vocabulary(source.path), int(source.config["vocab_size"]))
    writer = gguf.GGUFWriter(out_file, arch.name)
    try:
        _write_hyperparameters(writer, source, outtype)
        vocab.write_to(writer)
        for name, data in _tensors(source, arch, outtype):
            writer.add_tensor(name, data)
            if on_tensor:
                on_tensor(name)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return out_file
