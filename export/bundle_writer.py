"""Assemble a bundle: copy the tokenizer beside the model files, hash every file, sign the manifest.

    with staged_folder(out) as stage:              # export.atomic: all or nothing
        ... write model files into stage ...
        copy_tokenizer_files(source.path, stage)
        manifest = seal_bundle(stage, draft, key)  # draft: a Manifest whose `files` is left empty
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    bundle_files,
    file_sha256,
    sign,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def copy_tokenizer_files(source: Path, folder: Path) -> list[str]:
    """Copy the tokenizer, its chat template and the generation defaults that exist in ``source``."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
            copied.append(name)
    return copied


def seal_bundle(folder: Path, draft: Manifest, private_key: Ed25519PrivateKey) -> Manifest:
    """Hash every file in ``folder`` into the draft manifest, then write manifest.json and manifest.sig."""
    files = {
        name: FileEntry(sha256=file_sha256(folder / name), size=(folder / name).stat().st_size)
        for name in sorted(bundle_files(folder))
    }
    manifest = dataclasses.replace(draft, files=files)
    manifest.validate()
    manifest_bytes = manifest.to_json()
    (folder / MANIFEST_FILE).write_bytes(manifest_bytes)
    (folder / SIGNATURE_FILE).write_bytes(sign(manifest_bytes, private_key))
    return manifest
