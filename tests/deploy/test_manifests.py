"""deploy/: every kustomization renders offline, every object validates strictly against the schemas of a pinned
Kubernetes version (the CRDs against tests/deploy/schemas), and the manifests agree with the TOML files they
mount and with the code those pods run: probes, drain, discovery, keys, the autoscaling metric, the image's
user. The CPU overlay's replica config also serves a real replica on loopback, probed as the kubelet would.

Rendering uses tests/deploy/kustomize_render.py (kustomize's semantics for the features deploy/ uses); where a
kustomize CLI is installed (`kustomize` or `kubectl kustomize`), the first test checks both render the same.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cloud_service.config import parse_config
from cloud_service.engines.cpu import CpuEngineOptions
from cloud_service.engines.vllm import VllmEngineOptions
from cloud_service.gateway.config import GatewayConfig, parse_gateway_config
from cloud_service.metrics import ServerMetrics
from cloud_service.server import INFERENCE_SERVICE
from tests.deploy.kustomize_render import KustomizeError, UnsupportedKustomization, configmap_hash, render
from tests.support import REPO

KUBERNETES_VERSION = "1.31.0"
"""The API version every object is validated against (native gRPC probes are GA since 1.27)."""
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-v1.json",
}
"""Custom resources, which kubernetes-validate has no schema for: validated against these instead."""
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/cpu", "overlays/keda", "overlays/servicemonitor")
STANDALONE_MANIFESTS = ("tools/model-loader.yaml",)
REPLICA, GATEWAY = "tandem-replica", "tandem-gateway"
CONFIG_MOUNT = PurePosixPath("/etc/tandem")
STOP_MARGIN_S = 10
"""Grace beyond preStop + drain for the server to stop and close its engines."""


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(DEPLOY / name) for name in KUSTOMIZATIONS}


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _configmap(objects: list[dict[str, Any]], volume_owner: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap a Deployment mounts at /etc/tandem."""
    pod = volume_owner["spec"]["template"]["spec"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(CONFIG_MOUNT)]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return _one(objects, "ConfigMap", volume["configMap"]["name"])


def _toml(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    """The TOML file the Deployment's container is started with (its --config argument, from the ConfigMap)."""
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    path = PurePosixPath(args[args.index("--config") + 1])
    assert path.parent == CONFIG_MOUNT
    return tomllib.loads(_configmap(objects, deployment)["data"][path.name])


def _gateway_config(objects: list[dict[str, Any]]) -> GatewayConfig:
    """The gateway's TOML file through the gateway's own loader, with the key variable set as the Secret sets it."""
    data = _toml(objects, _one(objects, "Deployment", GATEWAY))
    environ = {data["gateway"]["replica_api_key_env"]: "the key from the Secret"}
    return parse_gateway_config(data, Path(CONFIG_MOUNT), environ=environ)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port(container: dict[str, Any], name: str) -> int:
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def _namespace(objects: list[dict[str, Any]]) -> str | None:
    namespaces = {o["metadata"].get("namespace") for o in objects}
    assert len(namespaces) == 1, f"objects in several namespaces: {namespaces}"
    return namespaces.pop()


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _validate(obj: dict[str, Any]) -> None:
    schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    else:
        jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(obj)


def _kustomize_cli() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


# -- rendering and schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_the_renderer_agrees_with_the_kustomize_cli(folder, rendered):
    command = _kustomize_cli()
    if command is None:
        pytest.skip("no kustomize CLI here (`kustomize` or `kubectl`) to check the in-repo renderer against")
    done = subprocess.run([*command, str(DEPLOY / folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = [obj for obj in yaml.safe_load_all(done.stdout) if obj]

    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    assert sorted(rendered[folder], key=key) == sorted(theirs, key=key)


def test_configmap_hash_suffix_is_kustomizes():
    # `kustomize build` of `configMapGenerator: [{name: x, literals: [a=b]}]` names it x-4h2mbtbbt6.
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    assert configmap_hash(configmap) == "4h2mbtbbt6"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_every_object_validates_strictly(folder, rendered):
    kinds = {o["kind"] for o in rendered[folder]}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for obj in rendered[folder]:
        _validate(obj)


@pytest.mark.parametrize("manifest", STANDALONE_MANIFESTS)
def test_standalone_manifests_validate_strictly(manifest):
    for obj in yaml.safe_load_all((DEPLOY / manifest).read_text()):
        _validate(obj)


def test_strict_validation_rejects_unknown_fields(rendered):
    deployment = copy.deepcopy(_one(rendered["overlays/gpu"], "Deployment", REPLICA))
    _container(deployment)["readinessProbe"]["grpc"]["serviceName"] = INFERENCE_SERVICE
    with pytest.raises(kubernetes_validate.ValidationError, match="serviceName"):
        _validate(deployment)
    scaled = copy.deepcopy(_one(rendered["overlays/keda"], "ScaledObject", REPLICA))
    scaled["spec"]["triggers"][0]["metadata"]["treshold"] = "4"
    with pytest.raises(jsonschema.ValidationError, match="treshold"):
        _validate(scaled)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS[1:])
def test_an_overlay_puts_everything_in_one_namespace(folder, rendered):
    assert _namespace(rendered[folder]) == "tandem"


# -- probes, drain, discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
@pytest.mark.parametrize("name", [REPLICA, GATEWAY])
def test_probes_ask_grpc_health_for_the_servers_services(folder, name, rendered):
    deployment = _one(rendered[folder], "Deployment", name)
    container = _container(deployment)
    server = _toml(rendered[folder], deployment)["server"]
    assert server["host"] == "0.0.0.0", "the kubelet probes the pod IP"
    assert server["port"] == _port(container, "grpc")
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": server["port"], "service": ""}
    assert container["readinessProbe"]["grpc"] == {"port": server["port"], "service": INFERENCE_SERVICE}


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
@pytest.mark.parametrize("name", [REPLICA, GATEWAY])
def test_termination_grace_outlasts_prestop_and_drain(folder, name, rendered):
    deployment = _one(rendered[folder], "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    command = _container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain_s = _toml(rendered[folder], deployment)["server"]["drain_timeout_s"]
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + drain_s + STOP_MARGIN_S


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_the_gateway_discovers_ready_replicas_through_the_headless_service(folder, rendered):
    objects = rendered[folder]
    service = _one(objects, "Service", REPLICA)
    replicas, gateway = _one(objects, "Deployment", REPLICA), _one(objects, "Deployment", GATEWAY)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is False
    assert _selects(service["spec"]["selector"], replicas["spec"]["template"]["metadata"]["labels"])
    assert not _selects(service["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])
    [grpc_port] = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    replica_port = _toml(objects, replicas)["server"]["port"]
    assert grpc_port["targetPort"] == "grpc" and _port(_container(replicas), "grpc") == replica_port

    host, _, port = _gateway_config(objects).gateway.discovery_dns.rpartition(":")
    namespace = _namespace(objects)
    names = {REPLICA} if namespace is None else {REPLICA, f"{REPLICA}.{namespace}.svc.cluster.local"}
    assert host in names and int(port) == grpc_port["port"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_the_gateways_split_quotas_among_the_ready_peers_of_their_headless_service(folder, rendered):
    objects = rendered[folder]
    peers, gateway = _one(objects, "Service", f"{GATEWAY}-peers"), _one(objects, "Deployment", GATEWAY)
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is False
    assert _selects(peers["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])
    host, _, port = _gateway_config(objects).gateway.quota_peers_dns.rpartition(":")
    namespace = _namespace(objects)
    name = f"{GATEWAY}-peers"
    assert host in ({name} if namespace is None else {name, f"{name}.{namespace}.svc.cluster.local"})
    assert int(port) in [p["port"] for p in peers["spec"]["ports"]]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_clients_reach_three_spread_gateways_and_disruptions_take_one_at_a_time(folder, rendered):
    objects = rendered[folder]
    gateway = _one(objects, "Deployment", GATEWAY)
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    pod = gateway["spec"]["template"]["spec"]
    assert gateway["spec"]["replicas"] == 3
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    assert pod["affinity"]["podAntiAffinity"]
    service = _one(objects, "Service", GATEWAY)
    assert service["spec"]["type"] == "ClusterIP" and _selects(service["spec"]["selector"], labels)
    server = _toml(objects, gateway)["server"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc", "http"]
    for name, port in (("grpc", server["port"]), ("http", server["http_port"])):  # gRPC and OpenAI-compatible HTTP
        assert [p["name"] for p in _container(gateway)["ports"] if p["containerPort"] == port] == [name]
    for name in (GATEWAY, REPLICA):
        budget = _one(objects, "PodDisruptionBudget", name)
        pod_labels = _one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["maxUnavailable"] == 1
        assert _selects(budget["spec"]["selector"]["matchLabels"], pod_labels)
    policy = _one(objects, "NetworkPolicy", REPLICA)
    assert [rule["from"][0]["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] if "from" in rule] == [
        gateway["spec"]["selector"]["matchLabels"]]


# -- the TOML files in the ConfigMaps -------------------------------------------------------------------------


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_the_replica_config_loads_and_fits_its_pod(folder, rendered):
    objects = rendered[folder]
    deployment = _one(objects, "Deployment", REPLICA)
    container, pod = _container(deployment), deployment["spec"]["template"]["spec"]
    config = parse_config(_toml(objects, deployment), Path(CONFIG_MOUNT))
    assert config.front_door.tls is None, "the kubelet's gRPC probes speak plaintext"
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert config.front_door.metrics_port == _port(container, "metrics")
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == config.front_door.metrics_port
    [models_mount] = [m for m in container["volumeMounts"] if m["name"] == "models"]
    [models_volume] = [v for v in pod["volumes"] if v["name"] == "models"]
    claim = models_volume["persistentVolumeClaim"]
    assert models_mount["readOnly"] and claim["readOnly"]
    assert _one(objects, "PersistentVolumeClaim", claim["claimName"])
    gpus = int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    assert gpus == int(container["resources"].get("requests", {}).get("nvidia.com/gpu", gpus))
    needed = 0
    for model in config.models:
        assert PurePosixPath(model.path).is_relative_to(models_mount["mountPath"])
        if model.engine == "vllm":
            options = VllmEngineOptions(**model.engine_options)
            needed += options.tensor_parallel_size * options.pipeline_parallel_size
            context = options.max_model_len
        else:
            options = CpuEngineOptions(**model.engine_options)
            context = options.context_length
            if options.threads:
                assert options.threads <= float(container["resources"]["limits"]["cpu"])
        if context:
            assert config.front_door.limits.max_prompt_tokens + config.front_door.limits.max_tokens <= context
    assert gpus == needed, "nvidia.com/gpu must equal the GPUs the vLLM models ask for"
    if gpus:
        [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_the_gateway_config_loads_and_fits_the_replicas(folder, rendered):
    objects = rendered[folder]
    gateway, replicas = _one(objects, "Deployment", GATEWAY), _one(objects, "Deployment", REPLICA)
    config = _gateway_config(objects)
    replica = parse_config(_toml(objects, replicas), Path(CONFIG_MOUNT))
    assert config.front_door.metrics_port == _port(_container(gateway), "metrics")
    served = {(m.name, m.version) for m in replica.models}
    assert {(model, version) for model, split in config.gateway.weights().items() for version in split} <= served
    for field in dataclasses.fields(config.front_door.limits):
        assert getattr(config.front_door.limits, field.name) <= getattr(replica.front_door.limits, field.name), (
            f"the gateway accepts a larger {field.name} than the replicas do")
    key_env = _toml(objects, gateway)["gateway"]["replica_api_key_env"]
    [env] = [e for e in _container(gateway)["env"] if e["name"] == key_env]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "tandem-api-keys", "key": "replica-api-key"}
    front_door = config.front_door
    assert front_door.tenants and not front_door.allow_unauthenticated and front_door.tls is None


OVERLAY_CONFIG_CHANGES = {
    "overlays/cpu": {
        GATEWAY: {("limits", "max_prompt_tokens"), ("limits", "max_tokens")},
        REPLICA: {("limits", "max_prompt_tokens"), ("limits", "max_tokens"), ("models", "")},
    },
}
"""What an overlay's TOML files may change from the base's, besides the gateway's DNS names (the namespace)."""


def _flat(data: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """(table, key) -> value; an array of tables counts as one entry (table, "")."""
    return {(table, key): value for table, fields in data.items()
            for key, value in (fields.items() if isinstance(fields, dict) else [("", fields)])}


@pytest.mark.parametrize("folder", KUSTOMIZATIONS[1:])
@pytest.mark.parametrize("name", [REPLICA, GATEWAY])
def test_overlay_configs_differ_from_the_base_only_where_they_must(folder, name, rendered):
    allowed = OVERLAY_CONFIG_CHANGES.get(folder, {}).get(name, set()) | {("gateway", "discovery_dns"),
                                                                          ("gateway", "quota_peers_dns")}
    base = _flat(_toml(rendered["base"], _one(rendered["base"], "Deployment", name)))
    mine = _flat(_toml(rendered[folder], _one(rendered[folder], "Deployment", name)))
    assert {key for key in base.keys() | mine.keys() if base.get(key) != mine.get(key)} <= allowed


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [pod.yaml]\ncommonLabels: {team: ml}\n")
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    with pytest.raises(UnsupportedKustomization, match="commonLabels"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [pod.yaml]\npatches:\n- target: {kind: Pod}\n  patch: '[{op: test, path: /kind, value: Job}]'\n")
    with pytest.raises(KustomizeError, match="test failed"):
        render(tmp_path)


# -- autoscaling, security, images ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_replicas_autoscale_on_the_replicas_queue_depth_gauge(folder, rendered):
    objects = rendered[folder]
    [queue_depth] = ServerMetrics().waiting.describe()
    replica_queue_limit = _gateway_config(objects).gateway.replica_queue_limit
    assert "replicas" not in _one(objects, "Deployment", REPLICA)["spec"], "the autoscaler owns the count"
    autoscalers = [o for o in objects if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    [autoscaler] = autoscalers
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", REPLICA)
    if autoscaler["kind"] == "HorizontalPodAutoscaler":
        [metric] = autoscaler["spec"]["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == queue_depth.name
        per_replica = float(metric["pods"]["target"]["averageValue"])
        assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    else:
        [trigger] = autoscaler["spec"]["triggers"]
        query = trigger["metadata"]["query"]
        assert queue_depth.name in query and f'namespace="{_namespace(objects)}"' in query
        assert f'pod=~"{REPLICA}-.*"' in query
        per_replica = float(trigger["metadata"]["threshold"])
    # The gateway holds requests back once every replica has replica_queue_limit waiting, so the replicas'
    # queues stop growing there: the autoscaler must act below that.
    assert per_replica < replica_queue_limit


def test_the_prometheus_adapter_rule_serves_the_hpas_metric(rendered):
    values = yaml.safe_load((DEPLOY / "addons" / "prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["custom"]
    [metric] = _one(rendered["overlays/gpu"], "HorizontalPodAutoscaler", REPLICA)["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def _dockerfile_user(dockerfile: Path) -> int:
    [user] = re.findall(r"^USER (\d+):\d+$", dockerfile.read_text(), re.MULTILINE)
    return int(user)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
@pytest.mark.parametrize("name", [REPLICA, GATEWAY])
def test_pods_run_as_the_images_non_root_user_with_a_read_only_root(folder, name, rendered):
    deployment = _one(rendered[folder], "Deployment", name)
    pod, container = deployment["spec"]["template"]["spec"], _container(deployment)
    users = {_dockerfile_user(DEPLOY / "docker" / f"Dockerfile.{flavour}") for flavour in ("cpu", "gpu")}
    assert pod["securityContext"]["runAsNonRoot"] is True and {pod["securityContext"]["runAsUser"]} == users
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert "/tmp" in writable


@pytest.mark.parametrize(("folder", "flavour"), [("overlays/gpu", "gpu"), ("overlays/cpu", "cpu"),
                                                 ("overlays/keda", "gpu"), ("overlays/servicemonitor", "gpu")])
def test_overlays_run_the_image_of_their_engine(folder, flavour, rendered):
    images = {_container(_one(rendered[folder], "Deployment", n))["image"] for n in (REPLICA, GATEWAY)}
    [image] = images
    assert image.startswith("tandem-inference:") and image.endswith(f"-{flavour}")
    assert (DEPLOY / "docker" / f"Dockerfile.{flavour}").is_file()
    engines = {m.engine for m in parse_config(
        _toml(rendered[folder], _one(rendered[folder], "Deployment", REPLICA)), Path(CONFIG_MOUNT)).models}
    assert engines == ({"vllm"} if flavour == "gpu" else {"cpu"})


@pytest.mark.parametrize(("flavour", "install"), [
    ("cpu", "-c constraints/cpu.txt '.[cloud]'"),
    ("gpu", "'.[cloud,gpu]'"),
])
def test_dockerfiles_install_the_right_extras_from_every_package(flavour, install):
    dockerfile = (DEPLOY / "docker" / f"Dockerfile.{flavour}").read_text()
    assert re.search(r"pip install .*" + re.escape(install) + "$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["tandem"\]$', dockerfile, re.MULTILINE)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile, re.MULTILINE))
    assert packages <= copied
    ignore = (DEPLOY / "docker" / f"Dockerfile.{flavour}.dockerignore").read_text().split()
    assert {f"!{p}/" for p in copied} <= set(ignore) and "!pyproject.toml" in ignore and "!README.md" in ignore


def test_the_docs_name_only_files_that_exist():
    text = (REPO / "docs" / "deploy.md").read_text()
    named = re.findall(r"(?<![\w/])deploy/(?:base|overlays|docker|addons|tools)[\w./*-]*", text)
    paths = {path.rstrip(".") for path in named}
    assert len(paths) > 10 and not [p for p in paths if not any(REPO.glob(p))]


# -- the CPU overlay's replica config, served for real --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_cpu_overlays_replica_answers_its_probes_and_exports_the_autoscaling_metric(rendered, tiny_llama):
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cloud_service.server import ReplicaServer

    objects = rendered["overlays/cpu"]
    deployment = _one(objects, "Deployment", REPLICA)
    container = _container(deployment)
    config = parse_config(_toml(objects, deployment), Path(CONFIG_MOUNT))
    config = dataclasses.replace(
        config, front_door=dataclasses.replace(config.front_door, host="127.0.0.1", port=0, metrics_port=_free_port()),
        models=tuple(dataclasses.replace(m, path=tiny_llama) for m in config.models),
    )
    probes = {name: container[name]["grpc"]["service"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    [metric] = _one(objects, "HorizontalPodAutoscaler", REPLICA)["spec"]["metrics"]

    async def check(server: ReplicaServer, port: int) -> tuple[dict[str, int], dict[str, int], str]:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # no API key, as the kubelet
            stub = health_pb2_grpc.HealthStub(channel)

            async def statuses() -> dict[str, int]:
                return {name: (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status
                        for name, service in probes.items()}

            serving = await statuses()
            url = f"http://127.0.0.1:{server.metrics_port}/metrics"
            exposition = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            await server.drain(timeout_s=1)
            return serving, await statuses(), exposition

    async def main() -> tuple[dict[str, int], dict[str, int], str]:
        server = ReplicaServer(config)
        port = await server.start()
        try:
            return await check(server, port)
        finally:
            await server.stop(0.1)

    serving, draining, exposition = asyncio.run(main())
    up, down = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert serving == dict.fromkeys(probes, up)
    assert draining == {"startupProbe": up, "livenessProbe": up, "readinessProbe": down}
    assert re.search(rf'^{metric["pods"]["metric"]["name"]}\{{model="assistant"\}} 0\.0$', exposition, re.MULTILINE)
