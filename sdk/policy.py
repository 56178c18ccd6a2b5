"""The policy: everything a HybridClient needs, in one object that can be loaded from a TOML file.

    policy = load_policy("tandem.toml")               # or Policy(cloud=CloudSettings(...), device=...)

    [routing]
    mode = "auto"                  # auto | prefer_local | prefer_cloud | local_only | cloud_only
    min_battery_percent = 20       # below this and not charging: the cloud
    max_difficulty = 0.5           # text-heuristic difficulty above this: the cloud
    use_router = true              # false: ignore the bundle's calibrated router, route on the text heuristic
    [device]
    bundle = "bundles/assistant"   # relative paths are relative to the policy file
    trusted_keys = ["keys/tandem.pub"]
    [cloud]
    target = "models.example.com:443"
    model = "assistant"
    api_key_env = "TANDEM_API_KEY"

The cloud is a Tandem gateway or replica over gRPC (``api = "grpc"``, the default, with ``target``), or any
OpenAI-compatible server over HTTP (``api = "openai"``, with ``base_url`` such as "http://127.0.0.1:8080/v1":
vLLM, llama.cpp's servers, Tandem's own HTTP endpoint, a hosted API).

Every value is checked where it is built; a bad one raises PolicyError naming the field (``cloud.target``,
``routing.mode``...) and saying what is allowed. Unknown keys are errors too (a typo must not silently fall
back to a default).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sdk.errors import PolicyError
from sdk.signals.types import Thermal


class Mode(StrEnum):
    AUTO = "auto"
    """Decide per request from the signals and the request's difficulty."""
    PREFER_LOCAL = "prefer_local"
    """The device whenever it can answer; the cloud otherwise."""
    PREFER_CLOUD = "prefer_cloud"
    """The cloud whenever it is reachable; the device otherwise."""
    LOCAL_ONLY = "local_only"
    """Only the device; never opens a network connection."""
    CLOUD_ONLY = "cloud_only"
    """Only the cloud; never loads the local model."""


_TARGET = re.compile(r"^(?:dns:///)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$")


def _number(where: str, value: Any, *, low: float | None = None, high: float | None = None,
            integer: bool = False, low_open: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise PolicyError(where, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise PolicyError(where, f"must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise PolicyError(where, f"must be <= {high}, got {value!r}")


def check_target(where: str, target: str) -> None:
    """A gRPC target: host:port, [ipv6]:port, dns:///host:port or unix:/path."""
    if not isinstance(target, str) or not target:
        raise PolicyError(where, f"must be a non-empty string like 'host:50051', got {target!r}")
    if target.startswith(("unix:", "unix-abstract:")):
        return
    match = _TARGET.match(target)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise PolicyError(where, f"{target!r} is not host:port (e.g. 'models.example.com:443', '127.0.0.1:50051', "
                                 "'[::1]:50051', 'dns:///models.internal:50051' or 'unix:/run/tandem.sock')")


@dataclass(frozen=True)
class RoutingSettings:
    mode: Mode = Mode.AUTO
    min_battery_percent: float = 20.0
    """Below this, unless charging, requests go to the cloud to save the battery."""
    max_thermal: Thermal = Thermal.SERIOUS
    """At or above this thermal state requests go to the cloud."""
    memory_headroom: float = 1.1
    """The device loads the model only if available memory >= the bundle's need x this factor."""
    min_free_memory_mib: float = 64.0
    """With the model loaded, the device takes requests only while this much memory stays free (under memory
    pressure work moves to the cloud, leaving room to the app)."""
    max_difficulty: float = 0.5
    """Heuristic difficulty (0..1) above which a request goes to the cloud (when the bundle has no router, or
    ``use_router`` is false)."""
    use_router: bool = True
    """Route on the bundle's calibrated router when it carries one. False: ignore it and route on the text
    heuristic (``max_difficulty``), e.g. to compare the two (``tandem eval routing``)."""
    router_threshold: float | None = None
    """With a calibrated router: the device answers when P(device answer good) >= this. None: see
    router_cloud_share, else 0.5 (the router's estimate says the device more likely fails)."""
    router_cloud_share: float | None = None
    """With a calibrated router and no router_threshold: the threshold from the router's calibrated table that
    sends at most this share of requests to the cloud (e.g. 0.3)."""
    max_cloud_rtt_ms: float = 1000.0
    """A hard request stays on the device when the cloud's smoothed round trip is above this."""
    avoid_metered: bool = True
    """On a metered network a hard request stays on the device (the host app sets the metered flag)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            known = ", ".join(m.value for m in Mode)
            raise PolicyError("routing.mode", f"{self.mode!r} is not one of {known}") from None
        try:
            object.__setattr__(self, "max_thermal", Thermal(self.max_thermal))
        except ValueError:
            raise PolicyError("routing.max_thermal",
                              f"{self.max_thermal!r} is not one of nominal, fair, serious, critical") from None
        if self.max_thermal is Thermal.UNKNOWN:
            raise PolicyError("routing.max_thermal", "must be nominal, fair, serious or critical")
        _number("routing.min_battery_percent", self.min_battery_percent, low=0, high=100)
        _number("routing.memory_headroom", self.memory_headroom, low=1.0)
        _number("routing.min_free_memory_mib", self.min_free_memory_mib, low=0)
        _number("routing.max_difficulty", self.max_difficulty, low=0, high=1)
        if not isinstance(self.use_router, bool):
            raise PolicyError("routing.use_router", f"must be true or false, got {self.use_router!r}")
        if self.router_threshold is not None:
            _number("routing.router_threshold", self.router_threshold, low=0, high=1)
        if self.router_cloud_share is not None:
            _number("routing.router_cloud_share", self.router_cloud_share, low=0, high=1)
            if self.router_threshold is not None:
                raise PolicyError("routing.router_cloud_share", "set router_threshold or router_cloud_share, not both")
        _number("routing.max_cloud_rtt_ms", self.max_cloud_rtt_ms, low=0, low_open=True)
        if not isinstance(self.avoid_metered, bool):
            raise PolicyError("routing.avoid_metered", f"must be true or false, got {self.avoid_metered!r}")


@dataclass(frozen=True)
class DeviceSettings:
    bundle: Path | None = None
    """The local bundle folder. It may not exist yet when ``provision_bundle`` fetches it from the cloud."""
    trusted_keys: tuple[Path, ...] = ()
    """Ed25519 public keys (PEM files) a bundle's signature must verify against."""
    context_length: int | None = None
    threads: int | None = None
    provision_bundle: str | None = None
    """Name of the bundle on the cloud's ModelDistribution service: fetched in the background (resumable)
    into ``bundle`` when it is missing or older, then used."""
    allow_insufficient_memory: bool = False

    def __post_init__(self) -> None:
        if self.bundle is not None:
            object.__setattr__(self, "bundle", Path(self.bundle))
        if isinstance(self.trusted_keys, str | Path):
            object.__setattr__(self, "trusted_keys", (self.trusted_keys,))
        object.__setattr__(self, "trusted_keys", tuple(Path(k) for k in self.trusted_keys))
        if self.bundle is not None and not self.trusted_keys:
            raise PolicyError("device.trusted_keys", "a device bundle needs at least one trusted public key "
                                                     "(the .pub file printed by `tandem export keygen`)")
        for index, key in enumerate(self.trusted_keys):
            if not key.is_file():
                raise PolicyError(f"device.trusted_keys[{index}]", f"{str(key)!r} is not a file")
        if self.context_length is not None:
            _number("device.context_length", self.context_length, low=2, integer=True)
        if self.threads is not None:
            _number("device.threads", self.threads, low=1, integer=True)
        if self.provision_bundle is not None and (not isinstance(self.provision_bundle, str)
                                                  or not self.provision_bundle):
            raise PolicyError("device.provision_bundle", "must be a bundle name like 'assistant-q4'")
        if self.provision_bundle is not None and self.bundle is None:
            raise PolicyError("device.bundle", "provision_bundle needs a folder to download into: set device.bundle")

    @property
    def configured(self) -> bool:
        return self.bundle is not None


class CloudApi(StrEnum):
    GRPC = "grpc"
    """A Tandem gateway or replica (``tandem.v1.Inference`` over gRPC) at ``target``."""
    OPENAI = "openai"
    """Any OpenAI-compatible server (``POST {base_url}/chat/completions``, streamed) at ``base_url``."""


_GRPC_ONLY = ("model_version", "tenant", "tls_server_name")
"""Settings only the gRPC side reads: set with ``api = "openai"`` they would silently do nothing."""


def check_base_url(where: str, url: str) -> None:
    """An OpenAI-compatible API root: http(s)://host[:port][/path], e.g. "http://127.0.0.1:8080/v1"."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url:
        raise PolicyError(where, f"must be a URL like 'http://127.0.0.1:8080/v1', got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PolicyError(where, f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise PolicyError(where, f"{url!r} is not an http:// or https:// URL with a host "
                                 "(e.g. 'http://127.0.0.1:8080/v1', 'https://api.example.com/v1')")
    if parts.query or parts.fragment:
        raise PolicyError(where, f"{url!r} has a query or fragment; give the API root only")
    if port is not None and not 1 <= port <= 65535:
        raise PolicyError(where, f"port {port} is out of range")


@dataclass(frozen=True)
class CloudSettings:
    target: str | None = None
    """The gateway or replica, e.g. "models.example.com:443" (``api = "grpc"``)."""
    api: CloudApi = CloudApi.GRPC
    """How the cloud is spoken to: "grpc" (a Tandem gateway or replica) or "openai" (any OpenAI-compatible
    server at ``base_url``)."""
    base_url: str | None = None
    """The OpenAI-compatible API root (``api = "openai"``), e.g. "http://127.0.0.1:8080/v1"; https:// uses TLS
    (``tls_ca`` to trust a private CA, ``tls_cert``/``tls_key`` for mutual TLS)."""
    model: str = ""
    model_version: str = ""
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    """Read the API key from this environment variable (better than putting it in a file)."""
    tenant: str = ""
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    timeout_s: float = 60.0
    """Deadline of a whole cloud call."""
    first_token_timeout_s: float = 10.0
    """Give up on the cloud (and fall back) when no token arrived within this."""
    health_interval_s: float = 2.0
    """How often the link monitor checks the cloud's health service."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "api", CloudApi(self.api))
        except ValueError:
            raise PolicyError("cloud.api", f"{self.api!r} is not one of grpc, openai") from None
        if self.api is CloudApi.OPENAI:
            self._check_openai()
        elif self.base_url is not None:
            raise PolicyError("cloud.base_url", "is for api = \"openai\"; a gRPC cloud takes target")
        if self.target is not None:
            check_target("cloud.target", self.target)
            if not isinstance(self.model, str) or not self.model:
                raise PolicyError("cloud.model", "name the model to ask for (as `ListModels` shows it)")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
                if not Path(value).is_file():
                    raise PolicyError(f"cloud.{name}", f"{str(value)!r} is not a file")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise PolicyError("cloud.tls_cert", "mutual TLS needs both tls_cert and tls_key")
        if self.api_key_env is not None and self.api_key is not None:
            raise PolicyError("cloud.api_key_env", "give api_key or api_key_env, not both")
        _number("cloud.timeout_s", self.timeout_s, low=0, low_open=True)
        _number("cloud.first_token_timeout_s", self.first_token_timeout_s, low=0, low_open=True)
        _number("cloud.health_interval_s", self.health_interval_s, low=0, low_open=True)

    def _check_openai(self) -> None:
        if self.target is not None:
            raise PolicyError("cloud.target", "api = \"openai\" takes base_url (e.g. 'http://127.0.0.1:8080/v1'), "
                                              "not a gRPC target")
        if self.base_url is None:
            raise PolicyError("cloud.base_url", "api = \"openai\" needs the server's API root, e.g. "
                                                "'http://127.0.0.1:8080/v1'")
        check_base_url("cloud.base_url", self.base_url)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not isinstance(self.model, str) or not self.model:
            raise PolicyError("cloud.model", "name the model to ask for (as GET {base_url}/models lists it)")
        for name in _GRPC_ONLY:
            if getattr(self, name):
                raise PolicyError(f"cloud.{name}", "is read by the gRPC side only (api = \"grpc\")")
        secure = self.base_url.startswith("https://")
        if not secure and (self.tls or self.tls_ca is not None or self.tls_cert is not None):
            raise PolicyError("cloud.base_url", "TLS settings need an https:// URL")

    @property
    def configured(self) -> bool:
        return self.target is not None or self.base_url is not None

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_cert is not None

    def resolved_api_key(self) -> str | None:
        if self.api_key_env is None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        if not value:
            raise PolicyError("cloud.api_key_env", f"the environment variable {self.api_key_env} is not set")
        return value


DEFAULT_CASCADE_MIN_LOGPROB = -2.0
"""The cascade's cutoff for a bundle that carries no calibrated one (an uncalibrated guess: calibrate the bundle
with `tandem export calibrate-router`, which measures one, or set cascade.min_logprob)."""
DEFAULT_CASCADE_WINDOW = 8


class CascadeCalibrationLike(Protocol):
    """What the SDK reads of a bundle's calibrated cascade (``edge_runtime.router.CascadeCalibration``)."""

    window_tokens: int
    min_logprob: float


@dataclass(frozen=True)
class CascadeSettings:
    """Answer on the device, and escalate to the cloud when the first tokens look unsure."""

    enabled: bool = False
    min_logprob: float | None = None
    """Escalate when a token among the first ``window_tokens`` has a logprob below this. None: the cutoff the
    bundle's router.json carries (measured on its calibration prompts), else DEFAULT_CASCADE_MIN_LOGPROB."""
    window_tokens: int | None = None
    """Tokens held back (streamed output) until they pass the check. None: the bundle's calibrated window, else
    DEFAULT_CASCADE_WINDOW."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise PolicyError("cascade.enabled", f"must be true or false, got {self.enabled!r}")
        if self.min_logprob is not None:
            _number("cascade.min_logprob", self.min_logprob, high=0)
        if self.window_tokens is not None:
            _number("cascade.window_tokens", self.window_tokens, low=1, high=256, integer=True)

    def resolved(self, calibration: CascadeCalibrationLike | None) -> CascadeSettings:
        """These settings with every None filled in: from the bundle's ``calibration`` (when the policy sets no
        min_logprob), else the defaults."""
        if self.min_logprob is not None or calibration is None:
            return replace(self, min_logprob=DEFAULT_CASCADE_MIN_LOGPROB if self.min_logprob is None
                           else self.min_logprob, window_tokens=self.window_tokens or DEFAULT_CASCADE_WINDOW)
        return replace(self, min_logprob=calibration.min_logprob,
                       window_tokens=self.window_tokens or calibration.window_tokens)


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 3
    """Tries per side before falling back to the other (first token not yet received)."""
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0
    breaker_failures: int = 3
    """Consecutive failures that open a side's circuit breaker."""
    breaker_reset_s: float = 15.0
    """How long an open breaker keeps a side out before one trial request."""

    def __post_init__(self) -> None:
        _number("retry.attempts", self.attempts, low=1, high=10, integer=True)
        _number("retry.base_delay_s", self.base_delay_s, low=0)
        _number("retry.max_delay_s", self.max_delay_s, low=0)
        if self.max_delay_s < self.base_delay_s:
            raise PolicyError("retry.max_delay_s", "must be >= retry.base_delay_s")
        _number("retry.breaker_failures", self.breaker_failures, low=1, integer=True)
        _number("retry.breaker_reset_s", self.breaker_reset_s, low=0, low_open=True)


@dataclass(frozen=True)
class Policy:
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    device: DeviceSettings = field(default_factory=DeviceSettings)
    cloud: CloudSettings = field(default_factory=CloudSettings)
    cascade: CascadeSettings = field(default_factory=CascadeSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)

    def __post_init__(self) -> None:
        for name, kind in _SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise PolicyError(name, f"must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        mode = self.routing.mode
        if mode is Mode.LOCAL_ONLY and not self.device.configured:
            raise PolicyError("device.bundle", "routing.mode = local_only needs a device bundle")
        if mode is Mode.CLOUD_ONLY and not self.cloud.configured:
            raise PolicyError("cloud.target", "routing.mode = cloud_only needs a cloud target (or api = \"openai\" "
                                              "and base_url)")
        if not self.device.configured and not self.cloud.configured:
            raise PolicyError("device.bundle", "configure a device bundle, a cloud target, or both")
        if self.device.provision_bundle and not self.cloud.configured:
            raise PolicyError("cloud.target", "device.provision_bundle downloads from the cloud: set cloud.target")
        if self.device.provision_bundle and self.cloud.api is CloudApi.OPENAI:
            raise PolicyError("device.provision_bundle", "bundles come from Tandem's ModelDistribution service "
                                                         "over gRPC; an OpenAI-compatible cloud (api = \"openai\") "
                                                         "has none")

    def with_mode(self, mode: Mode | str) -> Policy:
        return replace(self, routing=replace(self.routing, mode=Mode(mode)))


_SECTIONS: dict[str, type] = {
    "routing": RoutingSettings, "device": DeviceSettings, "cloud": CloudSettings,
    "cascade": CascadeSettings, "retry": RetrySettings,
}
_PATH_FIELDS = {"bundle", "trusted_keys", "tls_ca", "tls_cert", "tls_key"}


def _section(name: str, table: Any, base: Path) -> Any:
    kind = _SECTIONS[name]
    if not isinstance(table, dict):
        raise PolicyError(name, f"must be a table ([{name}]), got {type(table).__name__}")
    allowed = {f.name for f in fields(kind)}
    for key in table:
        if key not in allowed:
            raise PolicyError(f"{name}.{key}", f"unknown setting; known ones are {', '.join(sorted(allowed))}")
    values = dict(table)
    for key in _PATH_FIELDS & values.keys():
        value = values[key]
        if key == "trusted_keys":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PolicyError(f"{name}.{key}", "must be a list of file paths")
            values[key] = tuple(base / v for v in value)
        elif not isinstance(value, str):
            raise PolicyError(f"{name}.{key}", f"must be a path string, got {value!r}")
        else:
            values[key] = base / value
    try:
        return kind(**values)
    except TypeError as exc:  # a wrong type that the dataclass could not even take
        raise PolicyError(name, str(exc)) from None


def policy_from_dict(data: dict[str, Any], base: Path | None = None) -> Policy:
    """A Policy from parsed TOML (or any dict of the same shape); relative paths are taken from ``base``."""
    base = base or Path.cwd()
    for key in data:
        if key not in _SECTIONS:
            raise PolicyError(key, f"unknown section; known ones are {', '.join(_SECTIONS)}")
    return Policy(**{name: _section(name, table, base) for name, table in data.items()})


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a TOML policy file; PolicyError names the field that is wrong."""
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(str(source), "no such policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(source), f"cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(str(source), f"not valid TOML: {exc}") from None
    return policy_from_dict(data, source.parent)
