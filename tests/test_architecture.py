"""The package graph, read from the code's own imports (every ``import``, in functions and TYPE_CHECKING
blocks too: a dependency on paper is one a reader has to follow).

    tandem -> evaluation -> sdk -> cloud_service's client side / edge_runtime
    export -> edge_runtime
    cloud_service -> edge_runtime

``tandem`` (the CLI, the demo, the in-process fleet) is the one package that may import every other one, and
nothing imports it. The SDK reaches the cloud through its client side only: the modules in
``CLOUD_CLIENT``, which import nothing of the server side themselves (their packages' ``__init__`` modules
included, since importing a module runs them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGES = ("edge_runtime", "export", "cloud_service", "sdk", "evaluation", "tandem")
CLOUD_CLIENT = (
    "cloud_service",  # the package itself (its __init__ runs on every import of a submodule)
    "cloud_service.client",
    "cloud_service.channel",
    "cloud_service.backoff",
    "cloud_service.keepalive",
    "cloud_service.convert",
    "cloud_service.errors",
    "cloud_service.wire",
    "cloud_service.distribution",
    "cloud_service.distribution.download",
    "cloud_service.distribution.errors",
)
"""The cloud's client side: what a device or app install uses to talk to the cloud tier."""
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "edge_runtime": ("edge_runtime",),
    "export": ("export", "edge_runtime"),
    "cloud_service": ("cloud_service", "edge_runtime"),
    "sdk": ("sdk", "edge_runtime", *CLOUD_CLIENT),
    "evaluation": ("evaluation", "sdk", "export", "edge_runtime", *CLOUD_CLIENT),
    "tandem": PACKAGES,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((REPO / package).rglob("*.py")):
        yield _module_name(path), path


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of one of our packages in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package_of_file = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package_of_file.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name` may name a submodule: count both the package and pkg.name
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def _within(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (REPO / relative).with_suffix(".py").is_file() or (REPO / relative / "__init__.py").is_file()


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package: str) -> None:
    allowed = MAY_IMPORT[package]
    back_edges = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in _modules(package)
        for line, name in _imports(path, module)
        if _is_module(name) and not _within(name, allowed)
    ]
    assert not back_edges, f"{package} may import only {', '.join(allowed)}:\n" + "\n".join(back_edges)


def test_the_cloud_client_side_imports_nothing_of_the_server_side() -> None:
    client = [(module, path) for module, path in _modules("cloud_service")
              if module in CLOUD_CLIENT or module.startswith("cloud_service.wire")]
    assert {module for module, _ in client} >= {"cloud_service.client", "cloud_service.errors"}
    leaks = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in client
        for line, name in _imports(path, module)
        if _is_module(name) and not _within(name, ("edge_runtime", "cloud_service.wire"))
        and name not in CLOUD_CLIENT
    ]
    assert not leaks, "the cloud's client side must not import the server side:\n" + "\n".join(leaks)


def test_a_back_edge_is_caught(tmp_path: Path) -> None:
    """The checker itself: an sdk module importing the export package inside a function is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from export.tasks import build\n    from . import policy\n")
    names = [name for _, name in _imports(probe, "sdk.probe") if _is_module(name)]
    assert names == ["export.tasks", "export.tasks.build", "sdk", "sdk.policy"]
    assert [name for name in names if not _within(name, MAY_IMPORT["sdk"])] == ["export.tasks", "export.tasks.build"]
