"""BundleCatalog: the signed bundles a server distributes, by name and version, each verified at startup.

    catalog = BundleCatalog({"assistant-q4": ["bundles/assistant-q4-2024-06", "bundles/assistant-q4-2024-09"]},
                            trusted_keys=[load_public_key("tandem.pub")])
    entry = catalog.get("assistant-q4")          # the latest (last listed) version
    entry = catalog.get("assistant-q4", "3f0c9a1e5b7d2c48")

A version id is the first 16 hex characters of the sha256 of the bundle's manifest.json bytes: it changes
whenever anything in the bundle does (the manifest lists every file's sha256), and a client can compute it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloud_service.distribution.errors import CatalogError, UnknownBundleError
from edge_runtime.bundle import MANIFEST_FILE, SIGNATURE_FILE, Manifest, verify_bundle, verify_signature
from edge_runtime.errors import BundleError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VERSION_CHARS = 16

FolderList = Sequence[str | os.PathLike[str]] | str | os.PathLike[str]


def version_id(manifest_bytes: bytes) -> str:
    """The version id of a bundle: the first 16 hex characters of sha256(manifest.json bytes)."""
    return hashlib.sha256(manifest_bytes).hexdigest()[:VERSION_CHARS]


@dataclass(frozen=True)
class CatalogEntry:
    """One verified version of a bundle."""

    bundle: str
    version: str
    folder: Path
    manifest: Manifest
    manifest_bytes: bytes
    """manifest.json byte for byte, as signed (and as read and verified at load time)."""
    signature: bytes
    """manifest.sig byte for byte."""


class BundleCatalog:
    """Bundle name -> versions (oldest first, latest last) -> verified folder.

    ``bundles`` maps each name to its folders, oldest first (a single folder may be given as is). Every folder
    is checked with ``verify_bundle`` against ``trusted_keys`` here; a folder that fails raises CatalogError
    naming it, so a server never starts with a bundle it could not vouch for. Files are not re-hashed after
    that: the download stream carries running hashes and the client checks every file against the manifest.
    """

    def __init__(
        self, bundles: Mapping[str, FolderList], trusted_keys: Iterable[Ed25519PublicKey]
    ) -> None:
        keys = list(trusted_keys)
        self._versions: dict[str, dict[str, CatalogEntry]] = {}
        for name, folders in bundles.items():
            if not isinstance(name, str) or not name:
                raise CatalogError(f"bundle names must be non-empty strings, got {name!r}")
            if isinstance(folders, str | os.PathLike):
                folders = [folders]
            if not folders:
                raise CatalogError(f"bundle {name!r} lists no folder")
            versions: dict[str, CatalogEntry] = {}
            for folder in folders:
                entry = _load(name, Path(folder).absolute(), keys)
                if entry.version in versions:
                    raise CatalogError(
                        f"bundle {name!r}: {entry.folder} is the same version ({entry.version}) as "
                        f"{versions[entry.version].folder}; list each version once"
                    )
                versions[entry.version] = entry
            self._versions[name] = versions

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._versions)

    def versions(self, bundle: str) -> tuple[str, ...]:
        """Version ids of ``bundle``, oldest first; the last is the latest."""
        return tuple(self._bundle(bundle))

    def latest(self, bundle: str) -> CatalogEntry:
        return next(reversed(self._bundle(bundle).values()))

    def get(self, bundle: str, version: str = "") -> CatalogEntry:
        """That version of the bundle; an empty version means the latest. Raises UnknownBundleError."""
        if not version:
            return self.latest(bundle)
        versions = self._bundle(bundle)
        if version not in versions:
            raise UnknownBundleError(
                f"bundle {bundle!r} has no version {version!r}; it has {', '.join(versions)}"
            )
        return versions[version]

    def __contains__(self, bundle: object) -> bool:
        return bundle in self._versions

    def __iter__(self) -> Iterator[CatalogEntry]:
        """Every entry, bundle by bundle, oldest version first."""
        for versions in self._versions.values():
            yield from versions.values()

    def __len__(self) -> int:
        return len(self._versions)

    def _bundle(self, bundle: str) -> dict[str, CatalogEntry]:
        if bundle not in self._versions:
            known = ", ".join(sorted(self._versions)) or "none"
            raise UnknownBundleError(f"no bundle named {bundle!r} in the catalog (known: {known})")
        return self._versions[bundle]


def _load(name: str, folder: Path, keys: list[Ed25519PublicKey]) -> CatalogEntry:
    try:
        manifest = verify_bundle(folder, keys)
        manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
        signature = (folder / SIGNATURE_FILE).read_bytes()
        # The bytes kept (and served) are the ones checked here, even if the folder changed since verify_bundle.
        verify_signature(manifest_bytes, signature, keys)
        if Manifest.from_json(manifest_bytes) != manifest:
            raise CatalogError(f"bundle {name!r}: {folder} changed while it was being loaded")
    except (BundleError, OSError) as exc:
        raise CatalogError(f"bundle {name!r}: refusing {folder}: {exc}") from exc
    return CatalogEntry(name, version_id(manifest_bytes), folder, manifest, manifest_bytes, signature)
