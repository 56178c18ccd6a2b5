"""Errors of bundle distribution, split by what the caller can do about them (a branch of the cloud tier's
tree, drawn whole in ``cloud_service.errors``).

    DistributionError                 base of everything this package raises on purpose (a CloudServiceError)
    ├── CatalogError                  a configured bundle folder is not a valid signed bundle (at startup)
    ├── UnknownBundleError            no such bundle, version or file in the catalog (also a LookupError)
    └── DownloadError                 a download failed; ``dest`` was left untouched
        ├── BundleUnavailableError    the server has no such bundle/version, or cannot be reached: retry later
        ├── DownloadDeniedError       the server refused the credentials: fix the API key
        └── DownloadIntegrityError    bytes received do not match the signed manifest (or the server's hashes)

``download_bundle`` also lets the edge runtime's bundle errors (``SignatureError``, ``ManifestError``,
``BundleIntegrityError`` from ``edge_runtime.errors``) propagate unchanged: an untrusted or altered manifest is
a bundle problem, not a transport one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloud_service.errors import CloudServiceError

if TYPE_CHECKING:
    import grpc


class DistributionError(CloudServiceError):
    """Base class of the distribution errors."""


class CatalogError(DistributionError):
    """A configured bundle folder is missing, unsigned, untrusted or altered; the message names the folder."""


class UnknownBundleError(DistributionError, LookupError):
    """The catalog has no bundle, version or file of that name."""


class DownloadError(DistributionError):
    """A bundle download failed. ``code`` is the gRPC status behind it, when there is one."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class BundleUnavailableError(DownloadError):
    """The server does not have that bundle or version (NOT_FOUND), or could not be reached in time."""


class DownloadDeniedError(DownloadError):
    """The server refused the request's credentials (UNAUTHENTICATED or PERMISSION_DENIED)."""


class DownloadIntegrityError(DownloadError):
    """Received bytes do not match the signed manifest or the server's running hash; the file was discarded."""
