"""Errors of the cloud tier, split by what the caller can do about them.

    CloudServiceError                 base of everything cloud_service raises on purpose
    ├── ConfigError                   a config file, flag or run-time setting is invalid (the message names the
    │   │                             field): fix it; also a ValueError
    │   └── TlsFileError              a TLS certificate or key file cannot be read (``field``, ``path``)
    ├── CloudError                    a call to a replica or the gateway failed; ``code`` is the gRPC status name
    │   ├── CloudUnavailableError     UNAVAILABLE, or no connection: retry with backoff or use the device
    │   │   └── CloudDrainingError    the replica is draining: retry elsewhere at once
    │   ├── CloudTimeoutError         DEADLINE_EXCEEDED: the deadline passed
    │   ├── RateLimitedError          RESOURCE_EXHAUSTED: quota or queue full; ``retry_after_s`` says when
    │   ├── AuthenticationError       UNAUTHENTICATED: missing or unknown API key; fix the configuration
    │   ├── PermissionDeniedError     PERMISSION_DENIED: the key may not act for that tenant or model
    │   ├── InvalidArgumentError      INVALID_ARGUMENT: the request is invalid (the message names the field)
    │   ├── ModelNotFoundError        NOT_FOUND: no such model or version
    │   ├── CloudInternalError        INTERNAL / UNKNOWN: the engine failed
    │   └── StreamInterruptedError    the stream broke after some tokens; ``delivered_tokens`` were received
    │                                 (continue elsewhere from the partial answer)
    ├── DistributionError             bundle distribution (``cloud_service.distribution.errors``)
    │   ├── CatalogError              a configured bundle folder is not a valid signed bundle: fix the folder
    │   ├── UnknownBundleError        no such bundle, version or file in the catalog (also a LookupError)
    │   └── DownloadError             a download failed; ``dest`` was left untouched
    │       ├── BundleUnavailableError  no such bundle/version, or the server cannot be reached: retry later
    │       ├── DownloadDeniedError   the server refused the credentials: fix the API key
    │       └── DownloadIntegrityError  bytes received do not match the signed manifest: retry (resumes)
    ├── BadRequest                    inside the OpenAI HTTP layer only (``cloud_service.openai_api``): a body it
    │                                 cannot answer, answered 400 naming ``param``; also a ValueError
    └── RoutingError                  inside the gateway only: answered to its caller as a gRPC status
        ├── NoReplicaError            no replica serves the model, or none that does can take work now
        └── QueueFullError            every replica is saturated and the gateway's queue is full (or timed out)

Retrying can help with: CloudUnavailableError, CloudTimeoutError, RateLimitedError, CloudInternalError,
StreamInterruptedError (``retryable``). It cannot with the other CloudErrors, nor with ConfigError.
"""

from __future__ import annotations

from pathlib import Path

RETRY_AFTER_METADATA = "retry-after-ms"
"""Trailing metadata of RESOURCE_EXHAUSTED: milliseconds until the quota allows the request."""
DRAINING_METADATA = "tandem-draining"
"""Trailing metadata of UNAVAILABLE from a draining replica."""
DELIVERED_METADATA = "tandem-delivered-tokens"
"""Trailing metadata of a stream that failed after tokens were sent: how many."""
RESUMED_METADATA = "tandem-resumed"
"""Trailing metadata of a gateway stream that went on on another replica after one failed: how many times."""


class CloudServiceError(Exception):
    """Base class of the cloud tier's errors."""


class ConfigError(CloudServiceError, ValueError):
    """The configuration is invalid; the message names the field."""


class TlsFileError(ConfigError):
    """A TLS file cannot be read. ``field`` names the setting ("tls.ca", "tls.cert", "tls.key"), ``reason``
    says why (the OS's words)."""

    def __init__(self, field: str, path: Path, reason: str) -> None:
        super().__init__(f"{field}: cannot read {path}: {reason}")
        self.field = field
        self.path = path
        self.reason = reason


class RoutingError(CloudServiceError):
    """Base class of the gateway's routing outcomes (``NoReplicaError``, ``QueueFullError``)."""


class CloudError(CloudServiceError):
    code: str = "UNKNOWN"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)


class CloudUnavailableError(CloudError):
    code, retryable = "UNAVAILABLE", True


class CloudDrainingError(CloudUnavailableError):
    pass


class CloudTimeoutError(CloudError):
    code, retryable = "DEADLINE_EXCEEDED", True


class RateLimitedError(CloudError):
    code, retryable = "RESOURCE_EXHAUSTED", True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthenticationError(CloudError):
    code = "UNAUTHENTICATED"


class PermissionDeniedError(CloudError):
    code = "PERMISSION_DENIED"


class InvalidArgumentError(CloudError):
    code = "INVALID_ARGUMENT"


class ModelNotFoundError(CloudError):
    code = "NOT_FOUND"


class CloudInternalError(CloudError):
    code, retryable = "INTERNAL", True


class StreamInterruptedError(CloudError):
    retryable = True

    def __init__(self, message: str, delivered_tokens: int, cause: CloudError | None = None) -> None:
        super().__init__(message)
        self.delivered_tokens = delivered_tokens
        self.cause = cause
        self.code = cause.code if cause else "UNKNOWN"


__all__ = [
    "DELIVERED_METADATA",
    "DRAINING_METADATA",
    "RESUMED_METADATA",
    "RETRY_AFTER_METADATA",
    "AuthenticationError",
    "CloudDrainingError",
    "CloudError",
    "CloudInternalError",
    "CloudServiceError",
    "CloudTimeoutError",
    "CloudUnavailableError",
    "ConfigError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RoutingError",
    "StreamInterruptedError",
    "TlsFileError",
]
