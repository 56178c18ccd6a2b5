"""verify_bundle: a bundle is used only after its signature and every file's size and sha256 check out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from edge_runtime.bundle.signing import verify_signature
from edge_runtime.errors import BundleIntegrityError, BundleNotFoundError, SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(folder: Path) -> set[str]:
    """Relative paths of every file in the bundle folder but the manifest and its signature."""
    files = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
    return files - {MANIFEST_FILE, SIGNATURE_FILE}


def verify_bundle(path: str | os.PathLike[str], trusted_keys: Iterable[Ed25519PublicKey]) -> Manifest:
    """Check the manifest signature, then every file; return the manifest. Reads no model byte otherwise.

    Raises BundleNotFoundError, SignatureError, ManifestError or BundleIntegrityError (from
    ``edge_runtime.errors``), each naming what is wrong.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BundleNotFoundError(f"no bundle at {folder}: the folder does not exist")
    if not manifest_path.is_file():
        raise BundleNotFoundError(f"{folder} is not a bundle: it has no {MANIFEST_FILE}")
    signature_path = folder / SIGNATURE_FILE
    if not signature_path.is_file():
        raise SignatureError(f"{folder} is unsigned: it has no {SIGNATURE_FILE}")
    manifest_bytes = manifest_path.read_bytes()
    verify_signature(manifest_bytes, signature_path.read_bytes(), trusted_keys)
    manifest = Manifest.from_json(manifest_bytes)

    present = bundle_files(folder)
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise BundleIntegrityError(f"{folder} holds files its manifest does not list: {', '.join(unlisted)}")
    for name, entry in sorted(manifest.files.items()):
        file_path = folder / name
        if not file_path.is_file():
            raise BundleIntegrityError(f"{name} is missing from {folder}")
        size = file_path.stat().st_size
        if size != entry.size:
            raise BundleIntegrityError(f"{name} is {size} bytes, the manifest says {entry.size}: truncated or altered")
        if file_sha256(file_path) != entry.sha256:
            raise BundleIntegrityError(f"{name} does not match its sha256 in the manifest: it was altered")
    return manifest
