"""Errors of the edge runtime, split by what the caller can do about them.

    EdgeRuntimeError                  base of everything the edge runtime raises on purpose
    └── BundleError                   the bundle cannot be used as it is: fetch or export it again
        ├── BundleNotFoundError       no bundle folder (or no manifest.json) at that path
        ├── ManifestError             manifest.json is not a valid Tandem manifest
        ├── BundleIntegrityError      a file is missing, truncated, altered, or not listed in the manifest
        └── SignatureError            the manifest signature is missing, invalid or from an untrusted key

All bundle errors are unrecoverable for that bundle and recoverable for the caller: the SDK falls back
to the cloud on any of them.
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Base class of the edge runtime's errors."""


class BundleError(EdgeRuntimeError):
    """The bundle cannot be used as it is."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle at that path."""


class ManifestError(BundleError):
    """manifest.json is missing a field, has a wrong type, or is not JSON."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, truncated or altered, or a file is there that the manifest does not list."""


class SignatureError(BundleError):
    """The manifest is unsigned, its signature is invalid, or the signing key is not trusted."""
