"""Shared fixtures: toy models built once per test session, and the `gpu` marker's skip rule."""

from __future__ import annotations

from pathlib import Path

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
def eval_text() -> str:
    """Held-out text for quality gates, from the corpus generator with a seed no toy tokenizer trained on."""
    from export.toy_models.corpus import corpus_lines

    return "\n".join(corpus_lines(200, seed=12345))
