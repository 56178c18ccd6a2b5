"""The replica's configuration: one TOML file plus command-line flags, resolved once into ``ServerConfig``.

The file's [server], [limits], [tls] and [[tenants]] tables are the front door's, shared with the gateway's
file (``cloud_service.front_door.config``, where each key is described). A replica adds what it serves:

    [[models]]
    name = "assistant"
    path = "models/assistant"    # a Hugging Face model folder
    engine = "cpu"               # or "llamacpp" (a GGUF bundle or .gguf, llama.cpp with continuous batching),
                                 # "vllm" (the gpu extra), or "simulator" (routing experiments only)
    version = "v1"
    [models.cpu]                 # CpuEngineOptions fields
    max_running = 16
    [models.llamacpp]            # LlamaCppEngineOptions fields (max_running, context_length, threads, ...)
    [models.vllm]                # VllmEngineOptions fields (tensor_parallel_size, gpu_memory_utilization, ...)
    [models.simulator]           # SimulatorOptions fields; the load simulator needs no path and serves no model

    [distribution]               # edge bundles served to devices (ModelDistribution); the gateway's file too
    assistant-q4 = ["bundles/assistant-q4"]
    trusted_keys = ["keys/team.pub"]

Relative paths are resolved against the config file's folder. Every problem raises ``ConfigError`` naming
the field.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_service.config_tables import REQUIRED, expect, known, read_toml, resolve_path
from cloud_service.errors import ConfigError
from cloud_service.front_door.config import (
    TABLES,
    FrontDoorConfig,
    Limits,
    TenantConfig,
    TlsConfig,
    parse_front_door,
    split_flags,
)
from edge_runtime.errors import InvalidRequestError

ENGINES = ("cpu", "llamacpp", "vllm", "simulator")
PATHLESS_ENGINES = ("simulator",)
"""Engines that load no model folder (their [[models]] entry needs no path)."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path
    engine: str = "cpu"
    version: str = ""
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DistributionConfig:
    bundles: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    trusted_keys: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[ModelConfig, ...]
    front_door: FrontDoorConfig = field(default_factory=FrontDoorConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def __post_init__(self) -> None:
        check_models(self.models)


def check_models(models: tuple[ModelConfig, ...]) -> None:
    """At least one model, each name once."""
    if not models:
        raise ConfigError("models: configure at least one [[models]] entry")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names must be unique, got {names}")


def parse_distribution(data: dict[str, Any], base: Path) -> DistributionConfig:
    """The optional [distribution] table (bundle name -> folders, plus trusted_keys), shared with the gateway."""
    if "distribution" not in data:
        return DistributionConfig()
    table = dict(expect(data, "distribution", dict, "config"))
    keys = table.pop("trusted_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError("distribution.trusted_keys must be a list of public key files")
    bundles = {}
    for name, paths in table.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"distribution.{name} must be a list of bundle folders")
        bundles[name] = tuple(resolve_path(p, base) for p in paths)
    return DistributionConfig(bundles, tuple(resolve_path(k, base) for k in keys))


_OPTIONS = {
    "cpu": ("cloud_service.engines.cpu", "CpuEngineOptions"),
    "llamacpp": ("cloud_service.engines.llamacpp", "LlamaCppEngineOptions"),
    "vllm": ("cloud_service.engines.vllm", "VllmEngineOptions"),
    "simulator": ("cloud_service.engines.simulator", "SimulatorOptions"),
}
"""Each engine's options dataclass (modules that import no engine library until an engine is made)."""


def engine_options(engine: str, table: dict[str, Any], where: str) -> dict[str, Any]:
    """``table`` (a [models.<engine>] table), checked by building the engine's options from it, so a wrong
    option fails with the file, not at engine start: an unknown key or a bad value is a ConfigError naming the
    field's path (``models[0].cpu.gather_s must be ...``)."""
    module, name = _OPTIONS[engine]
    options = getattr(importlib.import_module(module), name)
    fields = {item.name for item in dataclasses.fields(options)}
    known(table, fields, where)
    try:
        options(**table)
    except (InvalidRequestError, TypeError, ValueError) as exc:
        message = str(exc)
        named = message.split(" ", 1)[0] in fields
        raise ConfigError(f"{where}.{message}" if named else f"{where}: {message}") from exc
    return table


def parse_config(data: dict[str, Any], base: Path) -> ServerConfig:
    known(data, {*TABLES, "models", "distribution"}, "config")
    models = []
    for index, entry in enumerate(expect(data, "models", list, "config", [])):
        where = f"models[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table (write it as [[models]])")
        known(entry, {"name", "path", "engine", "version", *ENGINES}, where)
        engine = expect(entry, "engine", str, where, "cpu")
        if engine not in ENGINES:
            raise ConfigError(f"{where}.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        path = expect(entry, "path", str, where, "." if engine in PATHLESS_ENGINES else REQUIRED)
        models.append(ModelConfig(
            name=expect(entry, "name", str, where), path=resolve_path(path, base),
            engine=engine, version=expect(entry, "version", str, where, ""),
            engine_options=engine_options(engine, dict(expect(entry, engine, dict, where, {})), f"{where}.{engine}"),
        ))
    check_models(tuple(models))  # before the front door's tables: a file without models says so first
    distribution = parse_distribution(data, base)
    return ServerConfig(models=tuple(models), front_door=parse_front_door(data, base), distribution=distribution)


def load_config(path: str | Path, **flags: Any) -> ServerConfig:
    """Read a TOML config; ``flags`` (host, port, metrics_port, allow_unauthenticated; None: not given) replace
    [server] fields."""
    path = Path(path)
    config = parse_config(read_toml(path), path.parent)
    server, other = split_flags(flags)
    if other:
        raise ConfigError(f"flags: {', '.join(sorted(other))} are not replica settings")
    return dataclasses.replace(config, front_door=config.front_door.with_flags(server))


__all__ = [
    "ENGINES",
    "PATHLESS_ENGINES",
    "ConfigError",
    "DistributionConfig",
    "FrontDoorConfig",
    "Limits",
    "ModelConfig",
    "ServerConfig",
    "TenantConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
    "parse_distribution",
    "read_toml",
]
