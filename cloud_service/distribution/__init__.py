"""Bundle distribution: the cloud serves signed edge bundles over gRPC; devices download them resumably.

Server side (a catalog is verified once, at startup):

    from cloud_service.distribution import BundleCatalog, add_to_server
    catalog = BundleCatalog({"assistant-q4": ["bundles/assistant-q4-v1", "bundles/assistant-q4-v2"]}, trusted_keys)
    add_to_server(server, catalog)              # server: grpc.aio.Server

Device side (verifies the signature before fetching, resumes from ``partial_folder(dest)``, installs atomically):

    from cloud_service.distribution import download_bundle
    manifest = await download_bundle(channel, "assistant-q4", Path("bundles/assistant-q4"), trusted_keys,
                                      metadata=[("authorization", f"Bearer {api_key}")])
"""

from cloud_service.distribution.catalog import BundleCatalog, CatalogEntry, version_id
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
from cloud_service.distribution.service import (
    CHUNK_BYTES,
    SERVICE_NAME,
    DistributionServicer,
    add_to_server,
    serve_catalog,
)

__all__ = [
    "CHUNK_BYTES",
    "SERVICE_NAME",
    "BundleCatalog",
    "BundleUnavailableError",
    "CatalogEntry",
    "CatalogError",
    "DistributionError",
    "DistributionServicer",
    "DownloadDeniedError",
    "DownloadError",
    "DownloadIntegrityError",
    "UnknownBundleError",
    "add_to_server",
    "download_bundle",
    "partial_folder",
    "serve_catalog",
    "version_id",
]
