"""Ed25519 signing keys of the export tool: make a pair, load the private half.

The private key is a PKCS#8 PEM file (mode 0600); the public key, which devices trust, a
SubjectPublicKeyInfo PEM file. Verification lives in ``edge_runtime.bundle``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from export.errors import OutputExistsError, SigningKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PEM_HEADER = b"-----BEGIN"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` atomically (temp file + rename), never replacing an existing file."""
    temp = path.with_name(f".{path.name}.partial")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.link(temp, path)  # fails if path exists, unlike rename
    finally:
        temp.unlink(missing_ok=True)


def generate_keypair(prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write PREFIX.key (private) and PREFIX.pub (public); return their paths."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    base = Path(prefix)
    private_path, public_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise OutputExistsError(f"{path} already exists; choose another name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    base.parent.mkdir(parents=True, exist_ok=True)
    _write_new(private_path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), 0o600)
    _write_new(public_path, key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), 0o644)
    return private_path, public_path


def load_private_key(source: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The signing key from a PEM file's path, or from PEM text itself (as kept in a CI secret variable)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = os.fspath(source)
    if text.lstrip().encode().startswith(PEM_HEADER):
        pem, origin = text.encode(), "the PEM text given"
    else:
        try:
            pem, origin = Path(text).read_bytes(), text
        except OSError as exc:
            raise SigningKeyError(
                f"cannot read the signing key {text}: {exc.strerror}; make one with `tandem export keygen`"
            ) from exc
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{origin} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{origin} is not an Ed25519 private key; make one with `tandem export keygen`")
    return key
