"""Every architecture the GGUF export supports, end to end: convert, numerical check, quantize, quality gate,
sign, load in the edge runtime, greedy decode like the source model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime import GenerationRequest, Message, SamplingParams, SyncEngine, load_bundle
from export.gguf.pipeline import build_gguf_bundle
from export.quality import Evaluation, QualityGate
from export.source import SourceModel
from export.toy_models import FAMILIES, ToyModelSpec, cached_toy_model
from tests.edge_runtime.conftest import source_greedy, source_logits

NEW_TOKENS = 12
NEAR_TIE = 0.1  # nats: where F16 rounding may legitimately flip a greedy choice
MESSAGES = [("user", "The quick brown fox jumps over the lazy dog.")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, toy_cache: Path) -> tuple[str, SourceModel]:
    return request.param, SourceModel.open(cached_toy_model(ToyModelSpec.tiny(request.param), toy_cache))


def _greedy(bundle: Path, trusted) -> list[int]:
    request = GenerationRequest(
        messages=[Message(role, text) for role, text in MESSAGES],
        sampling=SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True),
    )
    with SyncEngine(load_bundle(bundle, trusted_keys=trusted)) as engine:
        return list(engine.complete(request).token_ids)


def test_an_f16_bundle_decodes_like_the_source_model(family, signing_key, trusted, tmp_path: Path) -> None:
    name, source = family
    result = build_gguf_bundle(source, tmp_path / name, "f16", signing_key, evaluation=None)
    assert result.manifest.architecture == source.arch
    model, tokenizer = source.load_model(), source.load_tokenizer()
    prompt = tokenizer.apply_chat_template(
        [{"role": role, "content": text} for role, text in MESSAGES], add_generation_prompt=True, tokenize=True
    )
    expected = source_greedy(model, prompt, NEW_TOKENS)
    produced = _greedy(result.path, trusted)
    for index, (ours, theirs) in enumerate(zip(produced, expected, strict=True)):
        if ours != theirs:  # only at a near-tie of the source model
            logits = source_logits(model, prompt + expected[:index])[-1]
            assert logits[theirs] - logits[ours] <= NEAR_TIE, f"{name}: token {index} {ours} != {theirs}"
            break


def test_a_quantized_bundle_passes_its_gate_and_decodes(family, signing_key, trusted, eval_text, tmp_path) -> None:
    name, source = family
    result = build_gguf_bundle(
        source, tmp_path / name, "q8_0", signing_key, evaluation=Evaluation(eval_text, QualityGate(5.0), 64, 4)
    )
    assert "Q8_0" in result.manifest.tensor_types.values()
    assert result.gate is not None and result.gate.delta_pct <= 5.0
    assert len(_greedy(result.path, trusted)) == NEW_TOKENS
