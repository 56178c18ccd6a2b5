"""The client end of a gRPC connection to a replica or the gateway: the channel (plaintext, TLS or mutual
TLS), the API key's call metadata, and the lookup of a trailing-metadata value.

    channel = open_channel("cloud.example.com:443", ClientTls(ca=Path("ca.pem")))     # grpc.aio
    stub.Generate(request, metadata=bearer_metadata(api_key))
    draining = trailing_value(exc.trailing_metadata(), DRAINING_METADATA) is not None

``open_channel`` gives a ``grpc.aio`` channel, ``open_sync_channel`` a blocking one (for a thread of its own);
both take the same ``ClientTls`` and channel options (``keepalive.CLIENT_OPTIONS`` unless told otherwise).
``ClientTls.credentials()`` reads the PEM files; a caller that wants a missing file reported when it is built
rather than when it first dials calls it early and passes the result as ``credentials``.

The server's reading of the key (``bearer_key``) lives here too, so the header's format is written once.
Imports nothing of the server side: ``CloudClient``, the gateway's replica connections and the SDK dial
through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_service import keepalive
from cloud_service.errors import TlsFileError

if TYPE_CHECKING:
    import grpc

AUTH_METADATA = "authorization"
"""The call metadata key that carries the API key."""
BEARER_PREFIX = "Bearer "

Metadata = tuple[tuple[str, str], ...]
ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ClientTls:
    """Server verification (``ca``) and, for mutual TLS, this client's certificate and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    """Override the name checked in the server's certificate (e.g. when dialing an IP)."""

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials, reading the PEM files now; TlsFileError names a file that cannot be read."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read("tls.ca", self.ca),
            private_key=_read("tls.key", self.key),
            certificate_chain=_read("tls.cert", self.cert),
        )


def _read(field: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileError(field, Path(path), exc.strerror or str(exc)) from exc


def bearer_metadata(api_key: str | None) -> Metadata:
    """The call metadata that sends ``api_key`` (``authorization: Bearer <key>``); empty without a key."""
    return ((AUTH_METADATA, BEARER_PREFIX + api_key),) if api_key else ()


def bearer_key(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The API key that call metadata carries (``Bearer <key>``, the scheme in any case as RFC 7235 allows),
    or None."""
    for name, value in metadata or ():
        if name != AUTH_METADATA or not isinstance(value, str):
            continue
        scheme, _, key = value.strip().partition(" ")
        if scheme.lower() == BEARER_PREFIX.strip().lower() and key.strip():
            return key.strip()
    return None


def trailing_value(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str | None:
    """The value of ``name`` in (trailing) metadata, decoded; None when absent."""
    for key, value in metadata or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def channel_options(tls: ClientTls | None, options: ChannelOptions = keepalive.CLIENT_OPTIONS
                    ) -> list[tuple[str, Any]]:
    """``options`` plus the certificate name override ``tls.server_name`` asks for."""
    extra = [("grpc.ssl_target_name_override", tls.server_name)] if tls is not None and tls.server_name else []
    return [*options, *extra]


def open_channel(target: str, tls: ClientTls | None = None, *, options: ChannelOptions = keepalive.CLIENT_OPTIONS,
                 credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target``: plaintext when ``tls`` is None, else TLS (mutual with a client
    certificate). ``credentials`` (from ``tls.credentials()``) saves reading the files again."""
    import grpc

    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials or tls.credentials(), options=channel_options(tls, options))


def open_sync_channel(target: str, tls: ClientTls | None = None, *,
                      options: ChannelOptions = keepalive.CLIENT_OPTIONS,
                      credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """``open_channel`` for grpc's blocking API."""
    import grpc

    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, credentials or tls.credentials(), options=channel_options(tls, options))


__all__ = [
    "AUTH_METADATA",
    "BEARER_PREFIX",
    "ClientTls",
    "bearer_key",
    "bearer_metadata",
    "channel_options",
    "open_channel",
    "open_sync_channel",
    "trailing_value",
]
