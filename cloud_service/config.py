"""The replica's configuration: one TOML file plus command-line flags, resolved once into ``ServerConfig``.

    [server]
    host = "0.0.0.0"
    port = 50051
    metrics_port = 9400          # Prometheus /metrics over HTTP; 0 turns it off
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

    [[models]]
    name = "assistant"
    path = "models/assistant"    # a Hugging Face model folder
    engine = "cpu"               # or "vllm" (the gpu extra), or "simulator" (routing experiments only)
    version = "v1"
    [models.cpu]                 # CpuEngineOptions fields
    max_running = 16
    [models.vllm]                # VllmEngineOptions fields (tensor_parallel_size, gpu_memory_utilization, ...)
    [models.simulator]           # SimulatorOptions fields; the load simulator needs no path and serves no model

    [[tenants]]
    name = "acme"
    key_sha256 = "..."           # `tandem cloud new-key acme` prints a key and this line
    requests_per_minute = 600
    tokens_per_minute = 200000
    models = ["*"]

    [distribution]               # edge bundles served to devices (ModelDistribution)
    assistant-q4 = ["bundles/assistant-q4"]
    trusted_keys = ["keys/team.pub"]

Relative paths are resolved against the config file's folder. Every problem raises ``ConfigError`` naming
the field. The gateway's config file (``cloud_service.gateway.config``) shares the [server], [limits], [tls]
and [[tenants]] tables: ``parse_shared`` and ``check_shared`` read and check them for both.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENGINES = ("cpu", "vllm", "simulator")
PATHLESS_ENGINES = ("simulator",)
"""Engines that load no model folder (their [[models]] entry needs no path)."""
SERVER_FIELDS = {"host", "port", "metrics_port", "drain_timeout_s", "log_prompts", "allow_unauthenticated"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


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
class ModelConfig:
    name: str
    path: Path
    engine: str = "cpu"
    version: str = ""
    engine_options: dict[str, Any] = field(default_factory=dict)


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
class DistributionConfig:
    bundles: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    trusted_keys: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 0
    drain_timeout_s: float = 30.0
    log_prompts: bool = False
    allow_unauthenticated: bool = False
    limits: Limits = field(default_factory=Limits)
    tenants: tuple[TenantConfig, ...] = ()
    tls: TlsConfig | None = None
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models: configure at least one [[models]] entry")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"models: names must be unique, got {names}")
        check_shared(self)


def check_shared(config: Any) -> None:
    """The checks of the fields a replica's and the gateway's config share (tenants, ports, limits)."""
    if not config.tenants and not config.allow_unauthenticated:
        raise ConfigError(
            "tenants: no [[tenants]] with API keys are configured; add one (`tandem cloud new-key NAME`) or "
            "set server.allow_unauthenticated = true for a local experiment"
        )
    for name, value in (("port", config.port), ("metrics_port", config.metrics_port)):
        if not 0 <= value <= 65535:
            raise ConfigError(f"server.{name} must lie in 0..65535, got {value}")
    if config.drain_timeout_s < 0:
        raise ConfigError(f"server.drain_timeout_s must be >= 0, got {config.drain_timeout_s}")
    for name in ("max_prompt_tokens", "max_tokens", "max_message_bytes"):
        if getattr(config.limits, name) < 1:
            raise ConfigError(f"limits.{name} must be >= 1 (limits are never unlimited)")


_REQUIRED = object()


def _expect(
    table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = _REQUIRED
) -> Any:
    if key not in table:
        if default is _REQUIRED:
            raise ConfigError(f"{where}.{key} is required")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}.{key} must be {names}, got {value!r}")
    return value


def _known(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def parse_shared(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """[server], [limits], [tls] and [[tenants]] as keyword arguments of ``ServerConfig`` (the gateway's config
    takes the same ones)."""
    server = data.get("server", {})
    _known(server, SERVER_FIELDS, "server")
    limits = data.get("limits", {})
    _known(limits, {f.name for f in dataclasses.fields(Limits)}, "limits")
    tenants = []
    for index, entry in enumerate(data.get("tenants", [])):
        where = f"tenants[{index}]"
        _known(entry, {"name", "key_sha256", "requests_per_minute", "tokens_per_minute", "models"}, where)
        digest = _expect(entry, "key_sha256", str, where).lower()
        if not _SHA256.match(digest):
            raise ConfigError(f"{where}.key_sha256 must be 64 hex characters (the sha256 of the API key)")
        tenants.append(TenantConfig(
            name=_expect(entry, "name", str, where), key_sha256=digest,
            requests_per_minute=_expect(entry, "requests_per_minute", int, where, 600),
            tokens_per_minute=_expect(entry, "tokens_per_minute", int, where, 200_000),
            models=tuple(_expect(entry, "models", list, where, ["*"])),
        ))
    tls = None
    if "tls" in data:
        table = data["tls"]
        _known(table, {"cert", "key", "client_ca"}, "tls")
        ca = table.get("client_ca")
        tls = TlsConfig(_path(_expect(table, "cert", str, "tls"), base), _path(_expect(table, "key", str, "tls"), base),
                        _path(ca, base) if ca else None)
    return {
        "host": _expect(server, "host", str, "server", "127.0.0.1"),
        "port": _expect(server, "port", int, "server", 50051),
        "metrics_port": _expect(server, "metrics_port", int, "server", 0),
        "drain_timeout_s": float(_expect(server, "drain_timeout_s", (int, float), "server", 30.0)),
        "log_prompts": _expect(server, "log_prompts", bool, "server", False),
        "allow_unauthenticated": _expect(server, "allow_unauthenticated", bool, "server", False),
        "limits": Limits(**{k: _expect(limits, k, int, "limits", getattr(Limits(), k)) for k in limits}),
        "tenants": tuple(tenants), "tls": tls,
    }


def parse_distribution(data: dict[str, Any], base: Path) -> DistributionConfig:
    """The optional [distribution] table (bundle name -> folders, plus trusted_keys), shared with the gateway."""
    if "distribution" not in data:
        return DistributionConfig()
    table = dict(data["distribution"])
    keys = table.pop("trusted_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError("distribution.trusted_keys must be a list of public key files")
    bundles = {}
    for name, paths in table.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"distribution.{name} must be a list of bundle folders")
        bundles[name] = tuple(_path(p, base) for p in paths)
    return DistributionConfig(bundles, tuple(_path(k, base) for k in keys))


def parse_config(data: dict[str, Any], base: Path) -> ServerConfig:
    _known(data, {"server", "limits", "tls", "models", "tenants", "distribution"}, "config")
    models = []
    for index, entry in enumerate(data.get("models", [])):
        where = f"models[{index}]"
        _known(entry, {"name", "path", "engine", "version", *ENGINES}, where)
        engine = _expect(entry, "engine", str, where, "cpu")
        if engine not in ENGINES:
            raise ConfigError(f"{where}.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        path = _expect(entry, "path", str, where, "." if engine in PATHLESS_ENGINES else _REQUIRED)
        models.append(ModelConfig(
            name=_expect(entry, "name", str, where), path=_path(path, base),
            engine=engine, version=_expect(entry, "version", str, where, ""),
            engine_options=dict(_expect(entry, engine, dict, where, {})),
        ))
    distribution = parse_distribution(data, base)
    try:
        return ServerConfig(models=tuple(models), distribution=distribution, **parse_shared(data, base))
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's tables; ConfigError when it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no config file at {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_config(path: str | Path, **overrides: Any) -> ServerConfig:
    """Read a TOML config; ``overrides`` (from flags: host, port, metrics_port...) replace server fields."""
    path = Path(path)
    config = parse_config(read_toml(path), path.parent)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **changes) if changes else config
