"""Bundles: signed folders of model files that the edge runtime loads only after verifying them.

    from edge_runtime.bundle import load_public_key, verify_bundle
    manifest = verify_bundle("assistant-q4/", [load_public_key("tandem.pub")])
"""

from edge_runtime.bundle.manifest import (
    FORMATS,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    MemoryEstimate,
)
from edge_runtime.bundle.signing import key_id, load_public_key, sign, verify_signature
from edge_runtime.bundle.verify import bundle_files, file_sha256, verify_bundle

__all__ = [
    "FORMATS",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "FileEntry",
    "Manifest",
    "MemoryEstimate",
    "bundle_files",
    "file_sha256",
    "key_id",
    "load_public_key",
    "sign",
    "verify_bundle",
    "verify_signature",
]
