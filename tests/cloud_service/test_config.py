"""The replica's config file: every field checked, errors name the field, flags override, paths resolve."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloud_service.config import ConfigError, load_config

DIGEST = hashlib.sha256(b"key").hexdigest()
GOOD = f"""
[server]
port = 0
drain_timeout_s = 5

[limits]
max_tokens = 128

[[models]]
name = "toy"
path = "models/toy"
[models.cpu]
max_running = 4

[[tenants]]
name = "acme"
key_sha256 = "{DIGEST}"
requests_per_minute = 10
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "replica.toml"
    path.write_text(text)
    return path


def test_a_full_config_loads_with_defaults_and_relative_paths(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.models[0].path == tmp_path / "models" / "toy"
    assert config.models[0].engine_options == {"max_running": 4}
    front_door = config.front_door
    assert front_door.limits.max_tokens == 128 and front_door.limits.max_prompt_tokens == 4096
    assert front_door.tenants[0].requests_per_minute == 10 and front_door.tenants[0].tokens_per_minute == 200_000
    assert front_door.drain_timeout_s == 5.0 and not front_door.log_prompts


def test_flags_override_the_file(tmp_path):
    front_door = load_config(_write(tmp_path, GOOD), port=6000, host="0.0.0.0", metrics_port=None).front_door
    assert (front_door.port, front_door.host, front_door.metrics_port) == (6000, "0.0.0.0", 0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('name = "acme"\n', 'name = "acme"\ncolour = "red"\n'), r"tenants\[0\]: unknown field"),
        (lambda t: t.replace(DIGEST, "abc"), r"tenants\[0\].key_sha256 must be 64 hex"),
        (lambda t: t.replace("port = 0", 'port = "x"'), "server.port must be int"),
        (lambda t: t.replace("port = 0", "port = 70000"), "server.port must lie in"),
        (lambda t: t.replace("max_tokens = 128", "max_tokens = 0"), "limits.max_tokens must be >= 1"),
        (lambda t: t.replace('path = "models/toy"\n', ""), r"models\[0\].path is required"),
        (lambda t: t.replace('[models.cpu]', 'engine = "tpu"\n[models.cpu]'), r"models\[0\].engine must be one of"),
        (lambda t: t.split("[[tenants]]")[0], "tenants: no \\[\\[tenants\\]\\]"),
        (lambda t: t.split("[[models]]")[0], "models: configure at least one"),
        (lambda t: t + "\n[[models]]\nname = \"toy\"\npath = \"x\"\n", "names must be unique"),
        (lambda t: t + "\n[bogus]\n", "config: unknown field"),
        (lambda t: t + "\n[[broken", "not valid TOML"),
        (lambda t: t.replace("max_running = 4", "max_runing = 4"),
         r"models\[0\].cpu: unknown field\(s\) max_runing; allowed: context_length, dtype, gather_s, max_running"),
        (lambda t: t.replace("max_running = 4", "gather_s = 9"), r"models\[0\].cpu.gather_s must be a number of"),
        (lambda t: t.replace("max_running = 4", 'max_running = "4"'), r"models\[0\].cpu.max_running must be an int"),
        (lambda t: t.replace("[models.cpu]\nmax_running = 4",
                             'engine = "llamacpp"\n[models.llamacpp]\nbatch_tokens = 1'),
         r"models\[0\].llamacpp.batch_tokens \(1\) must be at least max_running"),
        (lambda t: t.replace("[models.cpu]\nmax_running = 4",
                             'engine = "simulator"\n[models.simulator]\nmax_waiting = 0'),
         r"models\[0\].simulator.max_waiting must be an integer >= 1"),
    ],
)
def test_invalid_configs_name_the_field(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, edit(GOOD)))


def test_missing_file_and_unauthenticated_opt_in(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")
    open_config = GOOD.split("[[tenants]]")[0].replace("[server]\n", "[server]\nallow_unauthenticated = true\n")
    assert load_config(_write(tmp_path, open_config)).front_door.tenants == ()
