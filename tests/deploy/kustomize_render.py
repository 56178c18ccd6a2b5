"""A renderer of kustomizations for machines without a kustomize CLI: the subset of kustomize that deploy/ uses,
with kustomize's semantics, so that the test suite can render and validate every overlay offline.

    objects = render(Path("deploy/overlays/gpu"))      # what `kustomize build deploy/overlays/gpu` prints

What it implements (kustomize v5, ``api/internal/target/kusttarget.go`` and the builtin plugins):

- ``resources``: YAML files (several documents each) and folders holding a kustomization, rendered first;
- ``configMapGenerator``: ``name`` and ``files`` (``path`` or ``key=path``), ``behavior`` create, replace or
  merge (with a ConfigMap generated below); the generated name gets kustomize's content-hash suffix at the top
  level, after every transformer, and every reference to it in a pod spec is rewritten;
- ``patches``: RFC 6902 JSON patches (``add``, ``remove``, ``replace``, ``test``) applied to the objects their
  ``target`` selects (each selector field an anchored regular expression), and a whole-object
  ``$patch: delete``;
- ``namespace`` (metadata.namespace of every namespaced object) and ``images`` (newName, newTag, digest on every
  container and init container), in kustomize's transformer order: patches, namespace, images.

Anything else is refused, never ignored: an unknown kustomization field, generator option, patch form or kind
with further namespace semantics raises ``UnsupportedKustomization``. tests/deploy/test_manifests.py checks the
result equals ``kustomize build`` (or ``kubectl kustomize``) wherever one is installed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "configMapGenerator",
                              "patches"})
CLUSTER_SCOPED_KINDS = frozenset({"ClusterRole", "PersistentVolume", "StorageClass", "PriorityClass",
                                  "IngressClass", "RuntimeClass", "CSIDriver", "Node"})
"""Kinds without a namespace: the namespace transformer leaves them alone."""
REFUSED_KINDS = frozenset({"Namespace", "RoleBinding", "ClusterRoleBinding", "CustomResourceDefinition",
                           "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService"})
"""Kinds whose namespace handling in kustomize goes beyond metadata.namespace (subjects, service references,
renaming): not implemented here."""
HASH_LENGTH = 10
_HASH_LETTERS = str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"})
"""kustomize's ``encodeHash``: these characters are swapped so a suffix never looks like a number or a word."""
_GO_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
"""Characters Go's json.Marshal escapes and Python's json.dumps does not."""
_SELECTOR_FIELDS = ("group", "version", "kind", "name", "namespace")
_PATCH_OPS = frozenset({"add", "remove", "replace", "test"})


class UnsupportedKustomization(ValueError):
    """The kustomization uses something this renderer does not implement; render it with kustomize instead."""


class KustomizeError(ValueError):
    """The kustomization is wrong (kustomize would refuse it too): a missing file, a patch that does not apply."""


def render(folder: Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``folder`` as ``kustomize build folder`` does (objects in no set order)."""
    objects, generated = _accumulate(Path(folder))
    renames = {}
    for index in generated:
        obj = objects[index]
        old = obj["metadata"]["name"]
        obj["metadata"]["name"] = f"{old}-{configmap_hash(obj)}"
        renames[(obj["metadata"].get("namespace"), old)] = obj["metadata"]["name"]
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        for pod_spec in _pod_specs(obj):
            _rename_configmap_references(pod_spec, lambda name, ns=namespace: renames.get((ns, name), name))
    return objects


def configmap_hash(configmap: dict[str, Any]) -> str:
    """kustomize's name suffix of a ConfigMap: sha256 of the JSON of {data, kind, name}, 10 characters.

    As kustomize's ``hasher.encodeConfigMap`` computes it: the name is looked up with the path
    ``"metadata/name"`` as ONE field name, which finds nothing, so it enters as "" (checked against kustomize
    v5.5.0: the suffix depends on the data only); missing data enters as "".
    """
    if configmap.get("binaryData") or "immutable" in configmap:
        raise UnsupportedKustomization("ConfigMaps with binaryData or immutable are not hashed here")
    encoded = json.dumps({"data": configmap.get("data") or "", "kind": "ConfigMap", "name": ""},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_JSON_ESCAPES.items():
        encoded = encoded.replace(char, escape)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:HASH_LENGTH].translate(_HASH_LETTERS)


# -- one kustomization ----------------------------------------------------------------------------------------


def _accumulate(folder: Path) -> tuple[list[dict[str, Any]], set[int]]:
    """The objects of one kustomization before hash suffixes, and the indexes of the generated ConfigMaps."""
    spec = _read_kustomization(folder)
    objects: list[dict[str, Any]] = []
    generated: set[int] = set()
    for entry in spec.get("resources", []):
        path = _inside(folder, entry)
        if path.is_dir():
            below, below_generated = _accumulate(path)
            generated |= {index + len(objects) for index in below_generated}
            objects.extend(below)
        else:
            objects.extend(_read_objects(path))
    _check_unique(objects)
    for generator in spec.get("configMapGenerator", []):
        _generate_configmap(folder, generator, objects, generated)
    for patch in spec.get("patches", []):
        objects, generated = _apply_patch(folder, patch, objects, generated)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        _check_fields(image, {"name", "newName", "newTag", "digest"}, f"{folder}: images entry")
        for obj in objects:
            for container in _containers(obj):
                container["image"] = _retag(container["image"], image)
    _check_unique(objects)
    return objects, generated


def _read_kustomization(folder: Path) -> dict[str, Any]:
    for name in KUSTOMIZATION_FILES:
        if (folder / name).is_file():
            spec = yaml.safe_load((folder / name).read_text(encoding="utf-8")) or {}
            break
    else:
        raise KustomizeError(f"{folder} has no kustomization.yaml")
    _check_fields(spec, SUPPORTED_FIELDS, f"{folder}/kustomization.yaml")
    if spec.get("kind", "Kustomization") != "Kustomization":
        raise UnsupportedKustomization(f"{folder}: kind {spec['kind']} (only Kustomization is rendered here)")
    return spec


def _read_objects(path: Path) -> list[dict[str, Any]]:
    objects = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for obj in objects:
        if not isinstance(obj, dict) or not {"apiVersion", "kind", "metadata"} <= set(obj):
            raise KustomizeError(f"{path}: every document must be an object with apiVersion, kind and metadata")
        if obj["kind"] in REFUSED_KINDS:
            raise UnsupportedKustomization(f"{path}: kind {obj['kind']} has namespace semantics not rendered here")
        if obj["kind"].endswith("List"):
            raise UnsupportedKustomization(f"{path}: lists of objects are not rendered here")
    return objects


def _generate_configmap(folder: Path, generator: dict[str, Any], objects: list[dict[str, Any]],
                        generated: set[int]) -> None:
    _check_fields(generator, {"name", "files", "behavior"}, f"{folder}: configMapGenerator entry")
    name = generator["name"]
    data = {}
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=")
        file = _inside(folder, path)
        data[key or file.name] = file.read_text(encoding="utf-8")
    behavior = generator.get("behavior", "create")
    matches = [i for i, obj in enumerate(objects) if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name
               and obj["metadata"].get("namespace") is None]
    if behavior == "create":
        if matches:
            raise KustomizeError(f"{folder}: configMapGenerator {name} exists already (use behavior: replace/merge)")
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        generated.add(len(objects) - 1)
    elif behavior in ("replace", "merge"):
        if len(matches) != 1:
            raise KustomizeError(f"{folder}: configMapGenerator {name} ({behavior}) finds no ConfigMap to change")
        target = objects[matches[0]]
        target["data"] = data if behavior == "replace" else {**target.get("data", {}), **data}
    else:
        raise KustomizeError(f"{folder}: configMapGenerator {name}: unknown behavior {behavior!r}")


# -- patches ------------------------------------------------------------------------------------------------


def _apply_patch(folder: Path, entry: dict[str, Any], objects: list[dict[str, Any]],
                 generated: set[int]) -> tuple[list[dict[str, Any]], set[int]]:
    _check_fields(entry, {"path", "patch", "target"}, f"{folder}: patches entry")
    if ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{folder}: a patches entry needs exactly one of path and patch")
    text = _inside(folder, entry["path"]).read_text(encoding="utf-8") if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    target = entry.get("target")
    if isinstance(patch, list):
        if target is None:
            raise KustomizeError(f"{folder}: a JSON patch needs a target")
        selected = [obj for obj in objects if _selected(obj, target)]
        if not selected:
            raise KustomizeError(f"{folder}: patch target {target} selects nothing")
        for obj in selected:
            for operation in patch:
                _json_patch(obj, operation)
        return objects, generated
    if isinstance(patch, dict) and patch.get("$patch") == "delete" and set(patch) <= {"$patch", "apiVersion",
                                                                                       "kind", "metadata"}:
        group, _, version = patch["apiVersion"].rpartition("/")
        target = target or {"group": group, "version": version, "kind": patch["kind"],
                            "name": patch["metadata"]["name"]}
        keep = [i for i, obj in enumerate(objects) if not _selected(obj, target)]
        if len(keep) == len(objects):
            raise KustomizeError(f"{folder}: delete patch {target} selects nothing")
        renumber = {old: new for new, old in enumerate(keep)}
        return [objects[i] for i in keep], {renumber[i] for i in generated if i in renumber}
    raise UnsupportedKustomization(f"{folder}: only JSON patches and `$patch: delete` are rendered here")


def _selected(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    _check_fields(target, set(_SELECTOR_FIELDS), "patch target")
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"],
              "namespace": obj["metadata"].get("namespace", "")}
    return all(re.fullmatch(target[key], actual[key]) for key in _SELECTOR_FIELDS if key in target)


def _json_patch(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    """One RFC 6902 operation, in place."""
    op = operation.get("op")
    if op not in _PATCH_OPS:
        raise UnsupportedKustomization(f"JSON patch op {op!r} (rendered here: {', '.join(sorted(_PATCH_OPS))})")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in operation["path"].split("/")[1:]]
    if not tokens:
        raise UnsupportedKustomization("JSON patches of a whole object are not rendered here")
    parent: Any = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op != "add" and not 0 <= index < len(parent):
            raise KustomizeError(f"JSON patch {operation}: no element {index}")
    elif op != "add" and last not in parent:
        raise KustomizeError(f"JSON patch {operation}: no field {last!r}")
    if op == "test":
        current = parent[index] if isinstance(parent, list) else parent[last]
        if current != operation["value"]:
            raise KustomizeError(f"JSON patch test failed: {operation['path']} is {current!r}")
    elif op == "remove":
        del parent[index if isinstance(parent, list) else last]
    elif isinstance(parent, list):
        value = copy.deepcopy(operation["value"])
        if op == "add":
            parent.insert(index, value)
        else:
            parent[index] = value
    else:
        parent[last] = copy.deepcopy(operation["value"])


# -- pod specs, containers, images ----------------------------------------------------------------------------


def _pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        yield spec
    template = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template"))
    if isinstance(template, dict) and "spec" in template:
        yield template["spec"]


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container and init container, wherever it sits (kustomize's images transformer looks everywhere)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict) and "image" in c)
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _retag(image: str, entry: dict[str, Any]) -> str:
    name, _, digest = image.partition("@")
    tag = ""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1:]
    if name != entry["name"]:
        return image
    name = entry.get("newName", name)
    if entry.get("newTag") or entry.get("digest"):
        tag, digest = entry.get("newTag", ""), entry.get("digest", "")
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _rename_configmap_references(pod_spec: dict[str, Any], rename: Any) -> None:
    for volume in pod_spec.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = rename(volume["configMap"]["name"])
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                source["configMap"]["name"] = rename(source["configMap"]["name"])
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                ref["name"] = rename(ref["name"])
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                source["configMapRef"]["name"] = rename(source["configMapRef"]["name"])


# -- checks ---------------------------------------------------------------------------------------------------


def _inside(folder: Path, relative: str) -> Path:
    """A path of the kustomization, kept inside its folder or a sibling tree as kustomize's loader allows."""
    if "://" in relative or relative.startswith("git@"):
        raise UnsupportedKustomization(f"{folder}: remote resource {relative!r} (this renderer reads local files)")
    path = (folder / relative).resolve()
    if not path.exists():
        raise KustomizeError(f"{folder}: {relative} does not exist")
    if path.is_file() and folder.resolve() not in path.parents:
        raise KustomizeError(f"{folder}: file {relative} lies outside the kustomization's folder")
    return path


def _check_fields(table: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise UnsupportedKustomization(f"{where}: {', '.join(unknown)} not rendered here (use kustomize)")


def _check_unique(objects: list[dict[str, Any]]) -> None:
    seen = set()
    for obj in objects:
        key = (obj["apiVersion"].rpartition("/")[0], obj["kind"], obj["metadata"].get("namespace"),
               obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{key} is defined twice")
        seen.add(key)
