"""The front door's configuration: the ``[server]``, ``[limits]``, ``[tls]`` and ``[[tenants]]`` tables that a
replica's and the gateway's TOML files share, read and checked once into ``FrontDoorConfig``.

    [server]
    host = "0.0.0.0"
    port = 50051
    metrics_port = 9400          # Prometheus /metrics over HTTP; 0 turns it off
    http_port = 8080             # OpenAI-compatible HTTP (cloud_service.openai_api); 0: any free port; unset: off
    drain_timeout_s = 30         # SIGTERM: in-flight streams get this long to finish
    log_prompts = false          # prompts and answers are never logged unless this is true
    allow_unauthenticated = false  # true only for local experiments: no [[tenants]] needed

    [limits]
    max_prompt_tokens = 4096
    max_tokens = 1024            # per request; larger asks are capped
    max_message_bytes = 1048576  # gRPC request size

    [tls]                        # optional; client_ca turns on mutual TLS
    cert = "server.crt"
    key = "server.key"
    client_ca = "clients-ca.crt"

    [[tenants]]
    name = "acme"
    key_sha256 = "..."           # `tandem cloud new-key acme` prints a key and this line
    requests_per_minute = 600
    tokens_per_minute = 200000
    models = ["*"]

``ServerConfig`` (``cloud_service.config``) and ``GatewayConfig`` (``cloud_service.gateway.config``) each hold
one as ``front_door``; command-line flags replace its [server] fields (``with_flags``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_service.config_tables import expect, known, resolve_path
from cloud_service.errors import ConfigError

TABLES = ("server", "limits", "tls", "tenants")
"""The TOML tables a front door reads."""
SERVER_FIELDS = {"host", "port", "metrics_port", "http_port", "drain_timeout_s", "log_prompts",
                 "allow_unauthenticated"}
TENANT_FIELDS = {"name", "key_sha256", "requests_per_minute", "tokens_per_minute", "models"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024
    max_message_bytes: int = 1 << 20


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class TenantConfig:
    name: str
    key_sha256: str
    requests_per_minute: int = 600
    tokens_per_minute: int = 200_000
    models: tuple[str, ...] = ("*",)

    def may_use(self, model: str) -> bool:
        return "*" in self.models or model in self.models


@dataclass(frozen=True)
class FrontDoorConfig:
    """Where a server listens and whom it lets in, with what limits (see the module docstring for each key)."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 0
    http_port: int | None = None
    """OpenAI-compatible HTTP on this port (0: any free one); None: no HTTP."""
    drain_timeout_s: float = 30.0
    log_prompts: bool = False
    allow_unauthenticated: bool = False
    limits: Limits = field(default_factory=Limits)
    tenants: tuple[TenantConfig, ...] = ()
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        if not self.tenants and not self.allow_unauthenticated:
            raise ConfigError(
                "tenants: no [[tenants]] with API keys are configured; add one (`tandem cloud new-key NAME`) or "
                "set server.allow_unauthenticated = true for a local experiment"
            )
        ports = (("port", self.port), ("metrics_port", self.metrics_port), ("http_port", self.http_port))
        for name, value in ports:
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"server.{name} must lie in 0..65535, got {value}")
        if self.drain_timeout_s < 0:
            raise ConfigError(f"server.drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        for name in ("max_prompt_tokens", "max_tokens", "max_message_bytes"):
            if getattr(self.limits, name) < 1:
                raise ConfigError(f"limits.{name} must be >= 1 (limits are never unlimited)")

    @property
    def authenticates(self) -> bool:
        """Whether callers need an API key (off only with allow_unauthenticated and no tenants)."""
        return bool(self.tenants) or not self.allow_unauthenticated

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> FrontDoorConfig:
        """The defaults with the [server] fields that ``flags`` gives (None: not given): a server run without
        a config file."""
        return cls(**_given(flags))

    def with_flags(self, flags: Mapping[str, Any]) -> FrontDoorConfig:
        """This config with the [server] fields that ``flags`` gives (None: not given) replaced, checked again."""
        changes = _given(flags)
        return dataclasses.replace(self, **changes) if changes else self


def _given(flags: Mapping[str, Any]) -> dict[str, Any]:
    changes = {name: value for name, value in flags.items() if value is not None}
    unknown = sorted(set(changes) - SERVER_FIELDS)
    if unknown:
        raise ConfigError(f"flags: {', '.join(unknown)} are not server fields ({', '.join(sorted(SERVER_FIELDS))})")
    return changes


def split_flags(flags: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``flags`` parted into [server] fields (for ``with_flags``) and the rest."""
    server = {k: v for k, v in flags.items() if k in SERVER_FIELDS}
    return server, {k: v for k, v in flags.items() if k not in SERVER_FIELDS}


def parse_front_door(data: dict[str, Any], base: Path) -> FrontDoorConfig:
    """[server], [limits], [tls] and [[tenants]] of a config file's ``data``; relative paths against ``base``."""
    server = expect(data, "server", dict, "config", {})
    known(server, SERVER_FIELDS, "server")
    limits = expect(data, "limits", dict, "config", {})
    known(limits, {f.name for f in dataclasses.fields(Limits)}, "limits")
    tenants = []
    for index, entry in enumerate(expect(data, "tenants", list, "config", [])):
        where = f"tenants[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table (write it as [[tenants]])")
        known(entry, TENANT_FIELDS, where)
        digest = expect(entry, "key_sha256", str, where).lower()
        if not _SHA256.match(digest):
            raise ConfigError(f"{where}.key_sha256 must be 64 hex characters (the sha256 of the API key)")
        tenants.append(TenantConfig(
            name=expect(entry, "name", str, where), key_sha256=digest,
            requests_per_minute=expect(entry, "requests_per_minute", int, where, 600),
            tokens_per_minute=expect(entry, "tokens_per_minute", int, where, 200_000),
            models=tuple(expect(entry, "models", list, where, ["*"])),
        ))
    tls = None
    if "tls" in data:
        table = expect(data, "tls", dict, "config")
        known(table, {"cert", "key", "client_ca"}, "tls")
        ca = expect(table, "client_ca", str, "tls", None)
        tls = TlsConfig(resolve_path(expect(table, "cert", str, "tls"), base),
                        resolve_path(expect(table, "key", str, "tls"), base),
                        resolve_path(ca, base) if ca else None)
    return FrontDoorConfig(
        host=expect(server, "host", str, "server", "127.0.0.1"),
        port=expect(server, "port", int, "server", 50051),
        metrics_port=expect(server, "metrics_port", int, "server", 0),
        http_port=expect(server, "http_port", int, "server", None),
        drain_timeout_s=float(expect(server, "drain_timeout_s", (int, float), "server", 30.0)),
        log_prompts=expect(server, "log_prompts", bool, "server", False),
        allow_unauthenticated=expect(server, "allow_unauthenticated", bool, "server", False),
        limits=Limits(**{k: expect(limits, k, int, "limits") for k in limits}),
        tenants=tuple(tenants),
        tls=tls,
    )


__all__ = [
    "SERVER_FIELDS",
    "TABLES",
    "FrontDoorConfig",
    "Limits",
    "TenantConfig",
    "TlsConfig",
    "parse_front_door",
    "split_flags",
]
