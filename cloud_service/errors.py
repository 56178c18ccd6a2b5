"""Errors of the cloud tier's client, one per gRPC status a caller handles differently.

    CloudError                        base; ``code`` is the gRPC status name
    ├── CloudUnavailableError         UNAVAILABLE, or no connection: retry with backoff or use the device
    │   └── CloudDrainingError        the replica is draining: retry elsewhere at once
    ├── CloudTimeoutError             DEADLINE_EXCEEDED: the deadline passed
    ├── RateLimitedError              RESOURCE_EXHAUSTED: quota or queue full; ``retry_after_s`` says when
    ├── AuthenticationError           UNAUTHENTICATED: missing or unknown API key; fix the configuration
    ├── PermissionDeniedError         PERMISSION_DENIED: the key may not act for that tenant or model
    ├── InvalidArgumentError          INVALID_ARGUMENT: the request is invalid (the message names the field)
    ├── ModelNotFoundError            NOT_FOUND: no such model or version
    ├── CloudInternalError            INTERNAL / UNKNOWN: the engine failed
    └── StreamInterruptedError        the stream broke after some tokens; ``delivered_tokens`` were received
                                      (continue elsewhere from the partial answer)

Retrying can help with: CloudUnavailableError, CloudTimeoutError, RateLimitedError, CloudInternalError,
StreamInterruptedError. It cannot with the others.
"""

from __future__ import annotations

RETRY_AFTER_METADATA = "retry-after-ms"
"""Trailing metadata of RESOURCE_EXHAUSTED: milliseconds until the quota allows the request."""
DRAINING_METADATA = "tandem-draining"
"""Trailing metadata of UNAVAILABLE from a draining replica."""
DELIVERED_METADATA = "tandem-delivered-tokens"
"""Trailing metadata of a stream that failed after tokens were sent: how many."""


class CloudError(Exception):
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
