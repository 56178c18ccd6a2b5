"""The gateway's configuration: the front door's tables of a replica's TOML file (``[server]``, ``[limits]``,
``[tls]``, ``[[tenants]]``, read by ``cloud_service.front_door.config``) plus a ``[gateway]`` table, resolved
once into ``GatewayConfig``. The gateway serves no model, so the file has no [[models]].

    [server]                       # the gateway's own listener, exactly as a replica's
    port = 50051
    metrics_port = 9401
    drain_timeout_s = 30

    [[tenants]]                    # callers' API keys: the gateway authenticates them and applies their quotas
    name = "acme"
    key_sha256 = "..."

    [gateway]
    replicas = ["10.0.0.5:50051", "10.0.0.6:50051"]   # a static list, or:
    discovery_dns = "tandem-replicas.default.svc.cluster.local:50051"  # every A/AAAA record (headless Service)
    dns_refresh_s = 5.0
    quota_peers_dns = "tandem-gateway-peers.default.svc.cluster.local:50051"  # optional: the gateways' own
                                   # headless Service; each of N gateways enforces 1/N of every tenant's quota
    policy = "p2c_affinity"        # round_robin | random | least_loaded | p2c | p2c_affinity
    load_refresh_s = 0.25          # GetLoad poll interval
    health_interval_s = 1.0        # grpc.health.v1 check interval
    affinity_imbalance = 0.5       # a sticky replica may be this much busier (in batch fractions) than the least
    affinity_max_keys = 100000     # prefix keys remembered (LRU)
    replica_queue_limit = 8        # a replica running max_running with this many waiting is saturated
    max_queue = 256                # requests the gateway holds while every replica is saturated
    queue_timeout_s = 30.0         # longest wait there before RESOURCE_EXHAUSTED
    max_attempts = 3               # replicas tried before the first token
    breaker_failures = 5           # consecutive failures that eject a replica (outlier detection)
    breaker_cooldown_s = 10.0      # first ejection's length (doubles on each repeat)
    replica_api_key_env = "TANDEM_REPLICA_KEY"        # or replica_api_key = "..." (the gateway's key at replicas)

    [gateway.replica_tls]          # optional: TLS to the replicas
    ca = "replicas-ca.crt"
    cert = "gateway.crt"           # with key: mutual TLS
    key = "gateway.key"
    server_name = "replica.internal"  # the name checked in replica certificates (we dial IPs)

    [distribution]                 # optional: edge bundles served to devices, as on a replica
    assistant-q4 = ["bundles/assistant-q4-v1"]
    trusted_keys = ["keys/release.pub"]

    [[gateway.versions]]           # unpinned traffic of a model splits by weight over its versions (canary)
    model = "assistant"
    version = "v1"
    weight = 95
    [[gateway.versions]]
    model = "assistant"
    version = "v2"
    weight = 5

Relative paths resolve against the file's folder; every problem raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_service.channel import ClientTls
from cloud_service.config import DistributionConfig, parse_distribution
from cloud_service.config_tables import expect, known, read_toml, resolve_path
from cloud_service.errors import ConfigError
from cloud_service.front_door.config import TABLES, FrontDoorConfig, parse_front_door, split_flags

POLICIES = ("round_robin", "random", "least_loaded", "p2c", "p2c_affinity")
_NUMBERS = (int, float)


ReplicaTls = ClientTls
"""How the gateway verifies replicas (``ca``) and, for mutual TLS, its own certificate and key: the gateway
dials its replicas as any client dials it."""


@dataclass(frozen=True)
class VersionWeight:
    model: str
    version: str
    weight: float


@dataclass(frozen=True)
class GatewaySettings:
    """The [gateway] table (see the module docstring for each key)."""

    replicas: tuple[str, ...] = ()
    discovery_dns: str | None = None
    dns_refresh_s: float = 5.0
    quota_peers_dns: str | None = None
    policy: str = "p2c_affinity"
    load_refresh_s: float = 0.25
    health_interval_s: float = 1.0
    affinity_imbalance: float = 0.5
    affinity_max_keys: int = 100_000
    replica_queue_limit: int = 8
    max_queue: int = 256
    queue_timeout_s: float = 30.0
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    replica_api_key: str | None = None
    replica_tls: ReplicaTls | None = None
    versions: tuple[VersionWeight, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.replicas) == bool(self.discovery_dns):
            raise ConfigError("gateway: set exactly one of gateway.replicas (a list of \"host:port\") and "
                              "gateway.discovery_dns (\"name:port\", e.g. a Kubernetes headless Service)")
        for index, address in enumerate(self.replicas):
            check_address(address, f"gateway.replicas[{index}]")
        if self.discovery_dns:
            check_address(self.discovery_dns, "gateway.discovery_dns")
        if self.quota_peers_dns is not None:
            check_address(self.quota_peers_dns, "gateway.quota_peers_dns")
        if self.policy not in POLICIES:
            raise ConfigError(f"gateway.policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("dns_refresh_s", "load_refresh_s", "health_interval_s", "queue_timeout_s", "breaker_cooldown_s"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ConfigError(f"gateway.{name} must be a number of seconds > 0, got {value!r}")
        if not 0 <= self.affinity_imbalance < math.inf:
            raise ConfigError(f"gateway.affinity_imbalance must be >= 0, got {self.affinity_imbalance!r}")
        for name in ("affinity_max_keys", "max_attempts", "breaker_failures"):
            if getattr(self, name) < 1:
                raise ConfigError(f"gateway.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("replica_queue_limit", "max_queue"):
            if getattr(self, name) < 0:
                raise ConfigError(f"gateway.{name} must be >= 0, got {getattr(self, name)!r}")
        seen = set()
        for index, entry in enumerate(self.versions):
            if (entry.model, entry.version) in seen:
                raise ConfigError(f"gateway.versions[{index}]: {entry.model}@{entry.version} is listed twice")
            seen.add((entry.model, entry.version))
            if not 0 <= entry.weight < math.inf:
                raise ConfigError(f"gateway.versions[{index}].weight must be >= 0, got {entry.weight!r}")
        for model in {e.model for e in self.versions}:
            if sum(e.weight for e in self.versions if e.model == model) <= 0:
                raise ConfigError(f"gateway.versions: the weights of model {model!r} sum to 0; give one a weight > 0")

    def weights(self) -> dict[str, dict[str, float]]:
        """model -> version -> weight."""
        table: dict[str, dict[str, float]] = {}
        for entry in self.versions:
            table.setdefault(entry.model, {})[entry.version] = entry.weight
        return table


@dataclass(frozen=True)
class GatewayConfig:
    gateway: GatewaySettings
    front_door: FrontDoorConfig = field(default_factory=FrontDoorConfig)
    """The gateway's own listener and callers, exactly as a replica's."""
    distribution: DistributionConfig = field(default_factory=DistributionConfig)
    """Edge bundles the gateway serves to devices itself (ModelDistribution), as a replica's [distribution]."""


def check_address(address: str, where: str) -> None:
    """``host:port`` (``[v6]:port`` for IPv6 literals) with a port in 1..65535."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{where} must be \"host:port\" with a port in 1..65535, got {address!r}")


_GATEWAY_KEYS = {f.name for f in dataclasses.fields(GatewaySettings)} | {"replica_api_key_env"}


_SIMPLE: dict[str, Any] = {
    "discovery_dns": str, "dns_refresh_s": _NUMBERS, "quota_peers_dns": str, "policy": str, "load_refresh_s": _NUMBERS,
    "health_interval_s": _NUMBERS, "affinity_imbalance": _NUMBERS, "affinity_max_keys": int,
    "replica_queue_limit": int, "max_queue": int, "queue_timeout_s": _NUMBERS, "max_attempts": int,
    "breaker_failures": int, "breaker_cooldown_s": _NUMBERS,
}
"""[gateway] keys that are plain values, with the TOML types each takes."""


def parse_gateway(table: Mapping[str, Any], base: Path, environ: Mapping[str, str]) -> GatewaySettings:
    where = "gateway"
    known(dict(table), _GATEWAY_KEYS, where)
    replicas = expect(dict(table), "replicas", list, where, [])
    if not all(isinstance(r, str) for r in replicas):
        raise ConfigError(f"gateway.replicas must be a list of \"host:port\" strings, got {replicas!r}")
    key = expect(dict(table), "replica_api_key", str, where, None)
    key_env = expect(dict(table), "replica_api_key_env", str, where, None)
    if key is not None and key_env is not None:
        raise ConfigError("gateway: set replica_api_key or replica_api_key_env, not both")
    if key_env is not None:
        key = environ.get(key_env)
        if not key:
            raise ConfigError(f"gateway.replica_api_key_env names {key_env!r}, but that environment variable is "
                              "empty or unset; export the gateway's replica API key there")
    tls = None
    if "replica_tls" in table:
        entry = expect(dict(table), "replica_tls", dict, where)
        known(entry, {"ca", "cert", "key", "server_name"}, "gateway.replica_tls")
        files = {name: expect(entry, name, str, "gateway.replica_tls", None) for name in ("ca", "cert", "key")}
        if (files["cert"] is None) != (files["key"] is None):
            raise ConfigError("gateway.replica_tls: give both cert and key (mutual TLS) or neither")
        tls = ReplicaTls(**{n: resolve_path(v, base) if v else None for n, v in files.items()},
                         server_name=expect(entry, "server_name", str, "gateway.replica_tls", None))
    versions = []
    for index, entry in enumerate(expect(dict(table), "versions", list, where, [])):
        here = f"gateway.versions[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here} must be a table with model, version and weight")
        known(entry, {"model", "version", "weight"}, here)
        versions.append(VersionWeight(expect(entry, "model", str, here), expect(entry, "version", str, here),
                                      float(expect(entry, "weight", _NUMBERS, here))))
    settings = {name: value for name, value in table.items() if name in _SIMPLE}
    for name in settings:
        expect(settings, name, _SIMPLE[name], where)
    return GatewaySettings(
        replicas=tuple(replicas), replica_api_key=key, replica_tls=tls, versions=tuple(versions),
        **{name: float(value) if _SIMPLE[name] == _NUMBERS else value for name, value in settings.items()},
    )


def parse_gateway_config(data: dict[str, Any], base: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    known(data, {*TABLES, "gateway", "distribution"}, "config")
    if "gateway" not in data:
        raise ConfigError("gateway: the [gateway] table is required (at least gateway.replicas or "
                          "gateway.discovery_dns)")
    table = expect(data, "gateway", dict, "config")
    settings = parse_gateway(table, base, os.environ if environ is None else environ)
    distribution = parse_distribution(data, base)
    return GatewayConfig(gateway=settings, front_door=parse_front_door(data, base), distribution=distribution)


def load_gateway_config(path: str | Path, *, environ: Mapping[str, str] | None = None,
                        **overrides: Any) -> GatewayConfig:
    """Read a gateway TOML file; ``overrides`` (from flags) replace server fields (host, port, metrics_port,
    allow_unauthenticated) or [gateway] fields (replicas, policy); None means "not given"."""
    path = Path(path)
    return apply_overrides(parse_gateway_config(read_toml(path), path.parent, environ), **overrides)


def apply_overrides(config: GatewayConfig, **overrides: Any) -> GatewayConfig:
    """``config`` with flags applied: [server] fields to the front door, [gateway] fields (replicas, policy)
    to the settings; None means "not given"."""
    server, rest = split_flags(overrides)
    settings = {k: v for k, v in rest.items() if v is not None}
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(GatewaySettings)})
    if unknown:
        raise ConfigError(f"flags: {', '.join(unknown)} are not gateway settings")
    if settings.get("replicas"):
        settings["replicas"] = tuple(settings["replicas"])
        settings["discovery_dns"] = None  # --replica replaces discovery
    gateway = dataclasses.replace(config.gateway, **settings) if settings else config.gateway
    return dataclasses.replace(config, gateway=gateway, front_door=config.front_door.with_flags(server))
