"""The front door's tables are read once, the same way for a replica's file and the gateway's; flags replace
[server] fields and are checked again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloud_service.config import ConfigError, load_config
from cloud_service.front_door.config import FrontDoorConfig, Limits, TlsConfig
from cloud_service.gateway.config import load_gateway_config

DIGEST = hashlib.sha256(b"key").hexdigest()
FRONT_DOOR = f"""
[server]
host = "0.0.0.0"
port = 0
metrics_port = 9400
drain_timeout_s = 5
log_prompts = true

[limits]
max_tokens = 128

[tls]
cert = "certs/server.crt"
key = "certs/server.key"

[[tenants]]
name = "acme"
key_sha256 = "{DIGEST}"
models = ["assistant"]
"""
MODELS = '[[models]]\nname = "assistant"\npath = "models/assistant"\n'
GATEWAY = '[gateway]\nreplicas = ["10.0.0.5:50051"]\n'


def test_a_replica_and_a_gateway_read_the_same_tables_into_the_same_front_door(tmp_path: Path):
    (tmp_path / "replica.toml").write_text(FRONT_DOOR + MODELS)
    (tmp_path / "gateway.toml").write_text(FRONT_DOOR + GATEWAY)
    replica = load_config(tmp_path / "replica.toml").front_door
    gateway = load_gateway_config(tmp_path / "gateway.toml").front_door
    assert replica == gateway
    assert (replica.host, replica.port, replica.metrics_port, replica.drain_timeout_s) == ("0.0.0.0", 0, 9400, 5.0)
    assert replica.log_prompts and replica.limits == Limits(max_tokens=128)
    assert replica.tls == TlsConfig(tmp_path / "certs" / "server.crt", tmp_path / "certs" / "server.key")
    assert replica.tenants[0].models == ("assistant",) and replica.authenticates


def test_flags_replace_server_fields_and_are_checked_again(tmp_path: Path):
    (tmp_path / "replica.toml").write_text(FRONT_DOOR + MODELS)
    front_door = load_config(tmp_path / "replica.toml", port=7000, host=None).front_door
    assert (front_door.port, front_door.host) == (7000, "0.0.0.0")
    with pytest.raises(ConfigError, match="server.port must lie in"):
        front_door.with_flags({"port": 70000})
    with pytest.raises(ConfigError, match="not server fields"):
        front_door.with_flags({"policy": "p2c"})


def test_without_a_file_flags_alone_may_open_the_door_for_an_experiment():
    assert not FrontDoorConfig.from_flags({"allow_unauthenticated": True, "port": None}).authenticates
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        FrontDoorConfig.from_flags({"port": 0})
