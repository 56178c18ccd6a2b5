"""Bundle distribution: the cloud serves signed edge bundles over gRPC; devices download them resumably.

Server side (a catalog is verified once, at startup; these modules are the server's, so a device never
imports them: this package's ``__init__`` holds only the device side):

    from cloud_service.distribution.catalog import BundleCatalog
    from cloud_service.distribution.service import add_to_server
    catalog = BundleCatalog({"assistant-q4": ["bundles/assistant-q4-v1", "bundles/assistant-q4-v2"]}, trusted_keys)
    add_to_server(server, catalog)              # server: grpc.aio.Server

Device side (verifies the signature before fetching, resumes from ``partial_folder(dest)``, installs atomically):

    from cloud_service.distribution import download_bundle
    manifest = await download_bundle(channel, "assistant-q4", Path("bundles/assistant-q4"), trusted_keys,
                                      metadata=bearer_metadata(api_key))      # from cloud_service.channel
"""

from cloud_service.distribution.download import download_bundle, partial_folder
from cloud_service.distribution.errors import (
    BundleUnavailableError,
    CatalogError,
    DistributionError,
    DownloadDeniedError,
    DownloadError,
    DownloadIntegrityError,
    UnknownBundleError,
)

__all__ = [
    "BundleUnavailableError",
    "CatalogError",
    "DistributionError",
    "DownloadDeniedError",
    "DownloadError",
    "DownloadIntegrityError",
    "UnknownBundleError",
    "download_bundle",
    "partial_folder",
]
