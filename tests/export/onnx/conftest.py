"""ONNX artifacts of the tiny toy models, exported once per session and shared by the tests here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from export.onnx import Int4Options, OnnxArtifact


@pytest.fixture(scope="session")
def tiny_sources(tiny_llama: Path, tiny_qwen2: Path, tiny_mistral: Path) -> dict[str, Path]:
    """Tiny model folders by architecture."""
    return {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}


@pytest.fixture
def arch(request: pytest.FixtureRequest) -> str:
    """Indirect parameter: an architecture of ``tiny_sources``."""
    return request.param


@pytest.fixture(scope="session")
def onnx_artifact(
    tmp_path_factory: pytest.TempPathFactory, tiny_sources: dict[str, Path]
) -> Callable[..., OnnxArtifact]:
    """``onnx_artifact(arch, quantization, int4=None)``: the artifact folder, exported on first use."""
    from export.onnx import export_onnx
    from export.source import SourceModel

    artifacts: dict[tuple[str, str, Int4Options | None], OnnxArtifact] = {}

    def get(arch: str, quantization: str, int4: Int4Options | None = None) -> OnnxArtifact:
        key = (arch, quantization, int4)
        if key not in artifacts:
            out = tmp_path_factory.mktemp("onnx") / f"{arch}-{quantization}"
            artifacts[key] = export_onnx(SourceModel.open(tiny_sources[arch]), out, quantization, int4=int4)
        return artifacts[key]

    return get


@pytest.fixture(scope="session")
def hf_model(tiny_sources: dict[str, Path]) -> Callable[[str], object]:
    """``hf_model(arch)``: the source model in float32 (transformers), loaded once."""
    from export.source import SourceModel

    models: dict[str, object] = {}

    def get(arch: str) -> object:
        if arch not in models:
            models[arch] = SourceModel.open(tiny_sources[arch]).load_model()
        return models[arch]

    return get


@pytest.fixture(scope="session")
def tokenizer(tiny_sources: dict[str, Path]) -> Callable[[str], object]:
    from export.source import SourceModel

    tokenizers: dict[str, object] = {}

    def get(arch: str) -> object:
        if arch not in tokenizers:
            tokenizers[arch] = SourceModel.open(tiny_sources[arch]).load_tokenizer()
        return tokenizers[arch]

    return get


@pytest.fixture(scope="session")
def held_out_text() -> str:
    """Text the toy tokenizers were not trained on (another seed of the same generator)."""
    from export.toy_models.corpus import corpus_lines

    return "\n".join(corpus_lines(150, seed=20_250_101))
