"""verify_bundle trusts nothing: signature first, then every file's size and hash, and no stray files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.bundle import Manifest, MemoryEstimate, sign, verify_bundle
from edge_runtime.errors import (
    BundleIntegrityError,
    BundleNotFoundError,
    ManifestError,
    SignatureError,
)
from export.bundle_writer import seal_bundle

KEY = Ed25519PrivateKey.generate()


def _draft() -> Manifest:
    return Manifest(
        name="toy", format="gguf", quantization="q8_0", architecture="llama", parameters=1000,
        context_length=128, model_file="model.gguf", memory=MemoryEstimate(4096, 256), files={},
    )


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    (folder / "tokenizer.json").write_text('{"model": {}}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x01" * 100)
    seal_bundle(folder, _draft(), KEY)
    return folder


def test_a_sealed_bundle_verifies_and_lists_every_file(bundle: Path) -> None:
    manifest = verify_bundle(bundle, [KEY.public_key()])
    assert set(manifest.files) == {"model.gguf", "tokenizer.json", "sub/weights.bin"}
    assert manifest.files["sub/weights.bin"].size == 100
    assert manifest.memory.bytes_for(128) == 4096 + 256 * 128


def test_any_key_in_the_trusted_list_will_do(bundle: Path) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    verify_bundle(bundle, [other, KEY.public_key()])


@pytest.mark.parametrize("name", ["model.gguf", "tokenizer.json", "sub/weights.bin"])
def test_an_altered_byte_in_any_file_fails(bundle: Path, name: str) -> None:
    path = bundle / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=f"{name} does not match its sha256"):
        verify_bundle(bundle, [KEY.public_key()])


def test_a_truncated_file_fails(bundle: Path) -> None:
    path = bundle / "model.gguf"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(BundleIntegrityError, match="truncated"):
        verify_bundle(bundle, [KEY.public_key()])


def test_a_missing_file_fails(bundle: Path) -> None:
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleIntegrityError, match="tokenizer.json is missing"):
        verify_bundle(bundle, [KEY.public_key()])


def test_a_file_the_manifest_does_not_list_fails(bundle: Path) -> None:
    (bundle / "sub" / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleIntegrityError, match="does not list: sub/extra.py"):
        verify_bundle(bundle, [KEY.public_key()])


def test_an_edited_manifest_fails_its_signature(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["context_length"] = 4096
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="altered"):
        verify_bundle(bundle, [KEY.public_key()])


def test_an_untrusted_signer_fails(bundle: Path) -> None:
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        verify_bundle(bundle, [Ed25519PrivateKey.generate().public_key()])


def test_an_unsigned_bundle_fails(bundle: Path) -> None:
    (bundle / "manifest.sig").unlink()
    with pytest.raises(SignatureError, match="unsigned"):
        verify_bundle(bundle, [KEY.public_key()])


def test_no_trusted_keys_is_refused(bundle: Path) -> None:
    with pytest.raises(SignatureError, match="no trusted public keys"):
        verify_bundle(bundle, [])


def test_a_malformed_signature_file_fails(bundle: Path) -> None:
    (bundle / "manifest.sig").write_text("not json")
    with pytest.raises(SignatureError, match="malformed"):
        verify_bundle(bundle, [KEY.public_key()])


def test_a_signed_but_invalid_manifest_is_a_manifest_error(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model_file"] = "elsewhere.gguf"
    raw = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sig").write_bytes(sign(raw, KEY))
    with pytest.raises(ManifestError, match="'model_file' is invalid"):
        verify_bundle(bundle, [KEY.public_key()])


def test_a_newer_schema_says_to_upgrade(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema"] = 99
    raw = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sig").write_bytes(sign(raw, KEY))
    with pytest.raises(ManifestError, match="upgrade tandem-inference"):
        verify_bundle(bundle, [KEY.public_key()])


def test_missing_bundle_and_missing_manifest(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(BundleNotFoundError, match="does not exist"):
        verify_bundle(tmp_path / "nowhere", [KEY.public_key()])
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleNotFoundError, match="no manifest.json"):
        verify_bundle(copy, [KEY.public_key()])
