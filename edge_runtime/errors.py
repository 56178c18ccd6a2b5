"""Errors of the edge runtime, split by what the caller can do about them.

    EdgeRuntimeError                  base of everything the edge runtime raises on purpose
    ├── BundleError                   the bundle cannot be used as it is: fetch or export it again
    │   ├── BundleNotFoundError       no bundle folder (or no manifest.json) at that path
    │   ├── ManifestError             manifest.json is not a valid Tandem manifest
    │   ├── BundleIntegrityError      a file is missing, truncated, altered, or not listed in the manifest
    │   ├── SignatureError            the manifest signature is missing, invalid or from an untrusted key
    │   ├── UnsupportedBundleError    a format or architecture this runtime (or this backend) cannot run
    │   └── ModelLoadError            the runtime library refused the model file (corrupt or incompatible)
    ├── BackendUnavailableError       the runtime library is not installed: install tandem-inference[edge]
    ├── InsufficientMemoryError       not enough free memory for weights + KV cache: free some or use the cloud
    ├── InvalidRequestError           the request is invalid (names the field); fix it, retrying won't help
    │   └── PromptTooLongError        the prompt does not fit the context; shorten it or use the cloud
    ├── EngineBusyError               too many requests already waiting; retry later or use the cloud
    ├── EngineClosedError             the engine was closed; load the bundle again
    ├── GenerationError               the runtime failed during generation; the engine stays usable
    └── StorageError (OSError)        the machine cannot hold a file being written (edge_runtime.storage)
        ├── DiskFullError             no space left: the message says how much is needed and free
        ├── ReadOnlyStorageError      the folder is on a read-only file system
        ├── StoragePermissionError    this user may not write there
        ├── NotAFolderError           a part of the path is a file, not a folder
        └── MissingFolderError        the folder to write into is not there

Recoverable for the caller (the SDK falls back to the cloud): every error but InvalidRequestError, which
would fail on any engine. PromptTooLongError is the exception: a cloud model usually has a longer context.
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


class UnsupportedBundleError(BundleError):
    """The bundle's format or architecture is one this runtime or the chosen backend cannot run."""


class ModelLoadError(BundleError):
    """The runtime library could not load the (verified) model file."""


class BackendUnavailableError(EdgeRuntimeError, ImportError):
    """The runtime library of this bundle's format is not installed."""


class InsufficientMemoryError(EdgeRuntimeError, MemoryError):
    """Not enough available memory to load the model with the asked context."""

    def __init__(self, message: str, *, needed_bytes: int, available_bytes: int) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes


class InvalidRequestError(EdgeRuntimeError, ValueError):
    """The request (or an engine option) is invalid; the message names the field."""


class PromptTooLongError(InvalidRequestError):
    """The prompt leaves no room in the context for a single generated token."""

    def __init__(self, message: str, *, prompt_tokens: int, context_length: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class EngineBusyError(EdgeRuntimeError):
    """The engine's wait queue is full."""


class EngineClosedError(EdgeRuntimeError):
    """The engine was closed."""


class GenerationError(EdgeRuntimeError):
    """The runtime library failed while generating; the request is over, the engine is usable."""


class StorageError(EdgeRuntimeError, OSError):
    """A machine fault while writing files (every package's, not only the runtime's): the message is one
    paragraph naming the path, the bytes needed where known and what to do. ``path`` is what could not be
    written, ``errno`` the system's code when there was one."""

    def __init__(
        self, message: str, *, path: str, errno: int | None = None, needed_bytes: int | None = None,
        free_bytes: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes

    def __str__(self) -> str:
        return str(self.args[0])


class DiskFullError(StorageError):
    """No space left on the file system (or the user's quota is spent)."""


class ReadOnlyStorageError(StorageError):
    """The folder is on a read-only file system."""


class StoragePermissionError(StorageError, PermissionError):
    """The user running this may not write there."""


class NotAFolderError(StorageError, NotADirectoryError):
    """A part of the path that must be a folder is a file."""


class MissingFolderError(StorageError, FileNotFoundError):
    """The folder to write into does not exist (and is not created by the writer)."""
