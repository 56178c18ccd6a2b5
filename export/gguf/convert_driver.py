"""Runs llama.cpp's HF-to-GGUF converter on one model folder, in a child process (see export.gguf.converter).

The child's import path starts with the converter's own folder, so ``gguf`` here is the converter's newer copy,
not the gguf package in site-packages. Usage::

    python -m export.gguf.convert_driver MODEL_DIR OUT_FILE {f32,f16} REPORT_JSON

It writes REPORT_JSON: ``{"ok": true, "architecture": ..., "gguf_architecture": ..., "pre_tokenizer": ...,
"pre_tokenizer_from": "converter" | "split pattern"}`` or ``{"ok": false, "kind": ..., "message": ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

# What a failure is, for the parent to raise the right typed error.
UNSUPPORTED = "unsupported_architecture"
PRE_TOKENIZER = "unknown_pre_tokenizer"
FAILED = "conversion_failed"


def _split_pattern_pre_tokenizer(model_dir: Path) -> str | None:
    """llama.cpp's pre-tokenizer name from tokenizer.json's split pattern, for a tokenizer whose token
    hash the converter does not know (a retrained vocabulary on a known splitter, like the toy models)."""
    from export.gguf.pre_tokenizers import pre_tokenizer_of

    return pre_tokenizer_of(model_dir)


def _hf_adds_bos(model_dir: Path) -> bool | None:
    """Whether the Hugging Face tokenizer puts BOS in front of encoded text (what llama.cpp must then do too);
    None without a BOS token. The converter reads add_bos_token from tokenizer_config.json, which many
    tokenizers leave out and encode through tokenizer.json's post-processor instead."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def convert(model_dir: Path, out_file: Path, outtype: str) -> dict[str, Any]:
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    hparams = ModelBase.load_hparams(model_dir, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    try:
        base = get_model_class(architecture)
    except NotImplementedError:
        return {"ok": False, "kind": UNSUPPORTED, "message": architecture}
    used: dict[str, str] = {}

    class Converter(base):  # type: ignore[misc, valid-type]
        model_arch = base.model_arch  # the converter asks every subclass to name it

        def get_vocab_base_pre(self, tokenizer: Any) -> str:
            try:
                used["pre_tokenizer"] = super().get_vocab_base_pre(tokenizer)
                used["pre_tokenizer_from"] = "converter"
            except NotImplementedError:
                fallback = _split_pattern_pre_tokenizer(model_dir)
                if fallback is None:
                    raise
                used["pre_tokenizer"], used["pre_tokenizer_from"] = fallback, "split pattern"
            return used["pre_tokenizer"]

        def set_vocab(self) -> None:
            super().set_vocab()
            add_bos = _hf_adds_bos(model_dir)
            if add_bos is not None:
                self.gguf_writer.add_add_bos_token(add_bos)  # the writer keeps the last value of a key

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}[outtype]
    with torch.inference_mode():
        model = Converter(model_dir, ftype, out_file, model_name=model_dir.name)
        try:
            model.write()
        except NotImplementedError as exc:
            if "pre-tokenizer" in str(exc):
                return {"ok": False, "kind": PRE_TOKENIZER, "message": str(exc)}
            raise
    return {
        "ok": True,
        "architecture": architecture,
        "gguf_architecture": gguf.MODEL_ARCH_NAMES[model.model_arch],
        **used,
    }


def main(argv: list[str]) -> int:
    model_dir, out_file, outtype, report = Path(argv[0]), Path(argv[1]), argv[2], Path(argv[3])
    # The converter logs every tensor at INFO; warnings and errors still reach stderr for the parent.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        result = convert(model_dir, out_file, outtype)
    except Exception as exc:  # reported to the parent, which raises a typed error
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        result = {"ok": False, "kind": FAILED, "message": f"{type(exc).__name__}: {exc}", "traceback": tail}
    report.write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
