"""The gateway's config file: the replica's tables plus [gateway]; every key checked, errors name the field,
flags override, the replica key comes from the environment when asked, paths resolve."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloud_service.config import ConfigError
from cloud_service.gateway.config import POLICIES, VersionWeight, load_gateway_config
from tests.support import invoke

DIGEST = hashlib.sha256(b"key").hexdigest()
GOOD = f"""
[server]
port = 0
drain_timeout_s = 5

[[tenants]]
name = "acme"
key_sha256 = "{DIGEST}"

[gateway]
replicas = ["10.0.0.5:50051", "10.0.0.6:50051"]
policy = "p2c"
load_refresh_s = 0.5
affinity_imbalance = 1
max_queue = 10
replica_api_key_env = "TEST_REPLICA_KEY"

[gateway.replica_tls]
ca = "certs/ca.crt"
server_name = "replica.internal"

[[gateway.versions]]
model = "assistant"
version = "v1"
weight = 95
[[gateway.versions]]
model = "assistant"
version = "v2"
weight = 5
"""
ENV = {"TEST_REPLICA_KEY": "tdm_replica"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_full_config_loads_with_defaults_env_key_and_relative_paths(tmp_path):
    config = load_gateway_config(_write(tmp_path, GOOD), environ=ENV)
    gateway = config.gateway
    assert gateway.replicas == ("10.0.0.5:50051", "10.0.0.6:50051") and gateway.discovery_dns is None
    assert (gateway.policy, gateway.load_refresh_s, gateway.affinity_imbalance, gateway.max_queue) == ("p2c", 0.5,
                                                                                                       1.0, 10)
    assert gateway.health_interval_s == 1.0 and gateway.max_attempts == 3  # defaults
    assert gateway.replica_api_key == "tdm_replica"
    assert gateway.replica_tls.ca == tmp_path / "certs" / "ca.crt"
    assert gateway.versions == (VersionWeight("assistant", "v1", 95.0), VersionWeight("assistant", "v2", 5.0))
    assert gateway.weights() == {"assistant": {"v1": 95.0, "v2": 5.0}}
    assert config.front_door.tenants[0].name == "acme" and config.front_door.drain_timeout_s == 5.0


def test_flags_override_the_file_and_replicas_replace_discovery(tmp_path):
    text = GOOD.replace('replicas = ["10.0.0.5:50051", "10.0.0.6:50051"]', 'discovery_dns = "replicas.svc:50051"')
    config = load_gateway_config(_write(tmp_path, text), environ=ENV, port=7000, policy="round_robin",
                                 replicas=("127.0.0.1:9000",), metrics_port=None)
    assert (config.front_door.port, config.gateway.policy, config.front_door.metrics_port) == (7000, "round_robin", 0)
    assert config.gateway.replicas == ("127.0.0.1:9000",) and config.gateway.discovery_dns is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("max_queue = 10", "max_queue = 10\ncolour = 1"), r"gateway: unknown field\(s\) colour"),
        (lambda t: t.replace('policy = "p2c"', 'policy = "fastest"'), "gateway.policy must be one of"),
        (lambda t: t.replace("max_queue = 10", 'max_queue = "ten"'), "gateway.max_queue must be int"),
        (lambda t: t.replace("load_refresh_s = 0.5", "load_refresh_s = 0"), "gateway.load_refresh_s must be"),
        (lambda t: t.replace("affinity_imbalance = 1", "affinity_imbalance = -1"), "gateway.affinity_imbalance"),
        (lambda t: t.replace("max_queue = 10", "max_attempts = 0"), "gateway.max_attempts must be >= 1"),
        (lambda t: t.replace('"10.0.0.6:50051"', '"10.0.0.6"'), r"gateway.replicas\[1\] must be \"host:port\""),
        (lambda t: t.replace("[gateway]\n", '[gateway]\ndiscovery_dns = "x.svc:1"\n'), "set exactly one of"),
        (lambda t: t.replace('replicas = ["10.0.0.5:50051", "10.0.0.6:50051"]', ""), "set exactly one of"),
        (lambda t: t.replace("[gateway]\n", '[gateway]\nquota_peers_dns = "gateways.svc"\n'),
         r"gateway.quota_peers_dns must be \"host:port\""),
        (lambda t: t.replace("weight = 95", "weight = 0").replace("weight = 5", "weight = 0"), "sum to 0"),
        (lambda t: t.replace("weight = 5\n", "weight = 5\nshare = 1\n"), r"gateway.versions\[1\]: unknown"),
        (lambda t: t.replace('version = "v2"', 'version = "v1"'), "listed twice"),
        (lambda t: t.replace('ca = "certs/ca.crt"', 'cert = "gateway.crt"'), "give both cert and key"),
        (lambda t: t.replace('replica_api_key_env = "TEST_REPLICA_KEY"', 'replica_api_key_env = "UNSET_VAR"'),
         "UNSET_VAR.*empty or unset"),
        (lambda t: t + '\n[[models]]\nname = "x"\npath = "y"\n', r"config: unknown field\(s\) models"),
        (lambda t: t.split("[gateway]")[0], r"the \[gateway\] table is required"),
        (lambda t: t.replace("port = 0", "port = 70000"), "server.port must lie in"),
        (lambda t: t.replace(f'key_sha256 = "{DIGEST}"', 'key_sha256 = "abc"'), "key_sha256 must be 64 hex"),
    ],
)
def test_every_mistake_names_its_field(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_gateway_config(_write(tmp_path, edit(GOOD)), environ=ENV)


def test_every_policy_name_is_accepted(tmp_path):
    for policy in POLICIES:
        text = GOOD.replace('policy = "p2c"', f'policy = "{policy}"')
        assert load_gateway_config(_write(tmp_path, text), environ=ENV).gateway.policy == policy


def test_the_cli_explains_a_bad_config_and_exits_2(tmp_path):
    result = invoke("cloud", "gateway")
    assert result.exit_code == 2 and "--replica HOST:PORT" in result.output
    text = GOOD.replace('replica_api_key_env = "TEST_REPLICA_KEY"', 'replica_api_key = "tdm_replica"')
    path = _write(tmp_path, text.replace('policy = "p2c"', 'policy = "fastest"'))
    result = invoke("cloud", "gateway", "-c", str(path))
    assert result.exit_code == 2 and "gateway.policy must be one of" in result.output
    result = invoke("cloud", "gateway", "--replica", "127.0.0.1:1")  # no keys and not allowed to run without
    assert result.exit_code == 2 and "allow_unauthenticated" in result.output
