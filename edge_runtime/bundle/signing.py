"""Ed25519 signatures of bundle manifests: the signature file format and its check against trusted keys.

manifest.sig is a small JSON object: {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}.
The key id (the start of the sha256 of the raw public key) only says which key signed; trust comes from the
signature verifying under one of the caller's trusted public keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(source: str | os.PathLike[str] | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes or from a PEM file's path."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(source, bytes):
        pem, origin = source, "the given PEM"
    else:
        try:
            pem, origin = Path(source).read_bytes(), str(source)
        except OSError as exc:
            raise SignatureError(f"cannot read the public key {source}: {exc.strerror}") from exc
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise SignatureError(f"{origin} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{origin} is not an Ed25519 public key")
    return key


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The contents of manifest.sig for these exact manifest bytes."""
    signature = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode(),
    }
    return (json.dumps(signature, sort_keys=True, indent=2) + "\n").encode()


def verify_signature(
    manifest_bytes: bytes, signature_file: bytes, trusted_keys: Iterable[Ed25519PublicKey]
) -> str:
    """Check manifest.sig against the trusted keys; return the id of the key that verified it."""
    from cryptography.exceptions import InvalidSignature

    keys = list(trusted_keys)
    if not keys:
        raise SignatureError("no trusted public keys were given; pass the public key the bundle was signed with")
    try:
        record = json.loads(signature_file)
        signature = base64.b64decode(record["signature"], validate=True)
        algorithm, signer = record["algorithm"], record["key_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError("manifest.sig is malformed") from exc
    if algorithm != ALGORITHM:
        raise SignatureError(f"manifest.sig uses {algorithm!r}; only {ALGORITHM} is accepted")
    for key in keys:
        try:
            key.verify(signature, manifest_bytes)
        except InvalidSignature:
            continue
        return key_id(key)
    if signer in {key_id(key) for key in keys}:
        raise SignatureError(f"the manifest signature does not match its content (key {signer}): it was altered")
    raise SignatureError(f"the manifest is signed by key {signer}, which is not among the trusted keys")
