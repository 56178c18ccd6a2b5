"""Reading a TOML config file's tables into typed fields, for every config of the cloud tier.

Each helper checks one thing and raises ``ConfigError`` naming the field (``where.key``): ``expect`` a key's
type (and its default when absent), ``known`` that a table has no unknown keys, ``resolve_path`` a relative
path against the config file's folder, ``read_toml`` the file itself.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from cloud_service.errors import ConfigError

REQUIRED: Any = object()
"""``expect``'s default: the key must be present."""


def expect(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
           default: Any = REQUIRED) -> Any:
    """``table[key]`` when it is of ``kind`` (a bool is never taken for an int); ``default`` when absent."""
    if key not in table:
        if default is REQUIRED:
            raise ConfigError(f"{where}.{key} is required")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}.{key} must be {names}, got {value!r}")
    return value


def known(table: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse keys of ``table`` outside ``allowed``, listing what is allowed."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def resolve_path(value: str, base: Path) -> Path:
    """``value`` with ``~`` expanded, relative to ``base`` (the config file's folder) unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's tables; ConfigError when it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no config file at {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


__all__ = ["REQUIRED", "expect", "known", "read_toml", "resolve_path"]
