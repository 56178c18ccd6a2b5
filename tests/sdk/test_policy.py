"""The policy file: every section and value checked where it is read, errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk import Mode, PolicyError, load_policy
from sdk.policy import CloudSettings, Policy, policy_from_dict


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tandem.toml"
    path.write_text(text)
    return path


def test_a_full_policy_file_loads_with_paths_relative_to_it(tmp_path, public_key_file, monkeypatch):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "tandem.pub").write_bytes(public_key_file.read_bytes())
    monkeypatch.setenv("TANDEM_TEST_KEY", "tdm_secret")
    policy = load_policy(_write(tmp_path, """
[routing]
mode = "prefer_local"
min_battery_percent = 30
max_thermal = "critical"
[device]
bundle = "bundles/assistant"
trusted_keys = ["keys/tandem.pub"]
context_length = 256
provision_bundle = "assistant"
[cloud]
target = "dns:///models.internal:50051"
model = "assistant"
api_key_env = "TANDEM_TEST_KEY"
[cascade]
enabled = true
window_tokens = 6
[retry]
attempts = 2
"""))
    assert policy.routing.mode is Mode.PREFER_LOCAL and policy.routing.min_battery_percent == 30
    assert policy.device.bundle == tmp_path / "bundles" / "assistant"
    assert policy.device.trusted_keys == (tmp_path / "keys" / "tandem.pub",)
    assert policy.cloud.resolved_api_key() == "tdm_secret"
    assert policy.cascade.enabled and policy.cascade.window_tokens == 6 and policy.retry.attempts == 2


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('[routing]\nmode = "sometimes"', "routing.mode", "not one of auto"),
        ("[routing]\nmin_battery_percent = 120", "routing.min_battery_percent", "<= 100"),
        ('[routing]\nmax_thermal = "lukewarm"', "routing.max_thermal", "not one of"),
        ("[routing]\nmemory_headroom = 0.5", "routing.memory_headroom", ">= 1.0"),
        ('[routing]\navoid_metered = "yes"', "routing.avoid_metered", "true or false"),
        ("[routing]\nrouter_cloud_share = 1.5", "routing.router_cloud_share", "<= 1"),
        ("[routing]\nrouter_cloud_share = 0.3\nrouter_threshold = 0.5", "routing.router_cloud_share", "not both"),
        ('[routing]\nmod = "auto"', "routing.mod", "unknown setting"),
        ("[weather]\nsunny = true", "weather", "unknown section"),
        ('[cloud]\ntarget = "http://models.example.com"\nmodel = "m"', "cloud.target", "is not host:port"),
        ('[cloud]\ntarget = "models.example.com:99999"\nmodel = "m"', "cloud.target", "is not host:port"),
        ('[cloud]\ntarget = "models.example.com:443"', "cloud.model", "name the model"),
        ('[cloud]\ntarget = "h:1"\nmodel = "m"\ntimeout_s = 0', "cloud.timeout_s", "> 0"),
        ('[cloud]\ntarget = "h:1"\nmodel = "m"\ntls_ca = "nope.pem"', "cloud.tls_ca", "is not a file"),
        ('[device]\nbundle = "b"', "device.trusted_keys", "trusted public key"),
        ('[device]\nbundle = "b"\ntrusted_keys = ["missing.pub"]', "device.trusted_keys[0]", "is not a file"),
        ('[cascade]\nmin_logprob = 1.5\n[cloud]\ntarget = "h:1"\nmodel = "m"', "cascade.min_logprob", "<= 0"),
        ('[retry]\nattempts = 0\n[cloud]\ntarget = "h:1"\nmodel = "m"', "retry.attempts", ">= 1"),
        ('[routing]\nmode = "local_only"\n[cloud]\ntarget = "h:1"\nmodel = "m"', "device.bundle", "local_only"),
        ("", "device.bundle", "a device bundle, a cloud target, or both"),
        ("[routing\nmode =", "tandem.toml", "not valid TOML"),
    ],
)
def test_bad_policy_values_name_the_field(tmp_path, text, field, problem):
    with pytest.raises(PolicyError) as caught:
        load_policy(_write(tmp_path, text))
    assert caught.value.field.endswith(field)
    assert problem in caught.value.problem


def test_missing_policy_file_and_unset_key_variable(tmp_path, monkeypatch):
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "absent.toml")
    monkeypatch.delenv("TANDEM_NOT_SET", raising=False)
    settings = CloudSettings(target="127.0.0.1:1", model="m", api_key_env="TANDEM_NOT_SET")
    with pytest.raises(PolicyError, match="TANDEM_NOT_SET is not set"):
        settings.resolved_api_key()


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "[::1]:443", "models.example.com:443",
                                    "dns:///models.internal:50051", "unix:/run/tandem.sock"])
def test_target_syntaxes_that_are_accepted(target):
    assert Policy(cloud=CloudSettings(target=target, model="m")).cloud.target == target


def test_policy_from_dict_rejects_wrong_section_types():
    with pytest.raises(PolicyError, match="must be a table"):
        policy_from_dict({"routing": "auto"})
