"""(a) The export pipeline on a real pretrained model: a signed q8_0 GGUF bundle, its conversion checked
against the float32 folder and its perplexity on held-out English gated."""

from __future__ import annotations

import pytest

from edge_runtime.bundle import verify_bundle
from tests.real_model.conftest import EVAL_WINDOW, EVAL_WINDOWS, QUANTIZATION

pytestmark = pytest.mark.slow


def test_the_bundle_is_signed_checked_and_gated(real_bundle, real_model, trusted):
    manifest = verify_bundle(real_bundle.path, trusted)
    assert (manifest.format, manifest.quantization, manifest.architecture) == ("gguf", QUANTIZATION, "llama")
    assert 130e6 < manifest.parameters < 140e6
    gate = real_bundle.gate
    assert gate is not None and gate.delta_pct <= gate.max_increase_pct
    assert gate.tokens == EVAL_WINDOWS * (EVAL_WINDOW - 1)
    assert 1.0 < gate.source_perplexity < 100.0  # a real model on English prose, not a random one (~49,152)
    assert "Q8_0" in set(real_bundle.tensor_types.types.values())
    check = manifest.evaluation["numerical_check"]
    assert check["max_abs_logit_diff"] <= check["atol"] + check["rtol"] * 100


def test_the_bundle_carries_the_fixed_tokenizer_and_the_chat_template(real_bundle, real_model):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (real_bundle.path / name).read_bytes() == (real_model.path / name).read_bytes(), name
    assert not (real_bundle.path / "tokenizer.model").exists()
    assert real_bundle.manifest.chat_template == (real_model.path / "chat_template.jinja").read_text()
