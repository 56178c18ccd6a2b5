"""Every architecture the ONNX export supports, end to end: convert, numerical check, INT8 / INT4 quantization,
quality gate, sign, load in the edge runtime, greedy decode like the source model, on both ONNX decoders
(onnxruntime-genai's generator and our own loop on ONNX Runtime)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runtime import EngineOptions, GenerationRequest, Message, SamplingParams, SyncEngine, load_bundle
from edge_runtime.backends.onnx import ARCHITECTURES
from export.onnx.bundle import OnnxBundle, build_onnx_bundle
from export.onnx.options import LOGITS_ATOL
from export.onnx.runner import OnnxRunner
from export.quality import Evaluation, QualityGate
from export.source import SourceModel
from export.toy_models import FAMILIES, ToyModelSpec, cached_toy_model
from export.toy_models.corpus import corpus_lines
from tests.edge_runtime.conftest import source_greedy, source_logits

NEW_TOKENS = 12
NEAR_TIE = 1e-3  # nats: fp32 ONNX vs transformers (tests/edge_runtime/test_engine_greedy.NEAR_TIE["fp32"])
MESSAGES = [("user", "The quick brown fox jumps over the lazy dog.")]
ONNX_FAMILIES = sorted(name for name, family in FAMILIES.items() if family.arch in ARCHITECTURES)
SLIDING_WINDOW_FAMILIES = [name for name in ONNX_FAMILIES if FAMILIES[name].config_fields.get("sliding_window")]
DECODERS = [
    "loop",
    pytest.param("genai", marks=pytest.mark.skipif(
        importlib.util.find_spec("onnxruntime_genai") is None, reason="onnxruntime-genai is not installed"
    )),
]
# Perplexity gates of the random-weight toys, whose perplexity moves either way under quantization noise:
# measured over these families (4 windows of 64 tokens) int8 -4.6 to +3.4 %, int4 -15.8 to +15.0 %.
GATES = {"int8": 5.0, "int4": 25.0}


@pytest.fixture(scope="module", params=ONNX_FAMILIES)
def family(request: pytest.FixtureRequest, toy_cache: Path) -> tuple[str, SourceModel]:
    return request.param, SourceModel.open(cached_toy_model(ToyModelSpec.tiny(request.param), toy_cache))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, signing_key, eval_text) -> Callable[[str, SourceModel, str], OnnxBundle]:
    """``bundle(name, source, quantization)``: the signed bundle, built on first use (both decoders share it)."""
    built: dict[tuple[str, str], OnnxBundle] = {}
    root = tmp_path_factory.mktemp("onnx-architectures")

    def get(name: str, source: SourceModel, quantization: str) -> OnnxBundle:
        if (name, quantization) not in built:
            gate = GATES.get(quantization)
            evaluation = None if gate is None else Evaluation(eval_text, QualityGate(gate), 64, 4)
            built[name, quantization] = build_onnx_bundle(
                source, root / f"{name}-{quantization}", quantization, signing_key, evaluation=evaluation
            )
        return built[name, quantization]

    return get


def _prompt(source: SourceModel, messages: list[tuple[str, str]]) -> list[int]:
    chat = [{"role": role, "content": text} for role, text in messages]
    return source.load_tokenizer().apply_chat_template(chat, add_generation_prompt=True, tokenize=True)


def _greedy(path: Path, trusted, decoder: str, messages: list[tuple[str, str]] = MESSAGES) -> list[int]:
    request = GenerationRequest(
        messages=[Message(role, text) for role, text in messages],
        sampling=SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True),
    )
    # "genai" raises rather than falling back, so each run really decodes on the decoder it names
    options = EngineOptions(onnx_decoder=decoder)
    with SyncEngine(load_bundle(path, trusted_keys=trusted, options=options)) as engine:
        return list(engine.complete(request).token_ids)


def _assert_decodes_like(model, prompt: list[int], produced: list[int], name: str) -> None:
    """The source model's greedy tokens, parting only at a near-tie of its logits."""
    expected = source_greedy(model, prompt, NEW_TOKENS)
    for index, (ours, theirs) in enumerate(zip(produced, expected, strict=True)):
        if ours != theirs:
            logits = source_logits(model, prompt + expected[:index])[-1]
            assert logits[theirs] - logits[ours] <= NEAR_TIE, f"{name}: token {index} {ours} != {theirs}"
            break


def test_every_onnx_architecture_has_a_toy_family_here() -> None:
    assert {FAMILIES[name].arch for name in ONNX_FAMILIES} == ARCHITECTURES


@pytest.mark.parametrize("decoder", DECODERS)
def test_an_fp32_bundle_decodes_like_the_source_model(family, bundle, trusted, decoder) -> None:
    name, source = family
    result = bundle(name, source, "fp32")
    assert result.manifest.architecture == source.arch
    assert result.artifact.check.conversion_max_diff <= LOGITS_ATOL
    if source.config.get("tie_word_embeddings"):  # stored once, the head reading the embedding transposed
        assert result.artifact.tied_embeddings
        assert "tied LM head, transposed" in " ".join(result.manifest.tensor_types.values())
    produced = _greedy(result.path, trusted, decoder)
    _assert_decodes_like(source.load_model(), _prompt(source, MESSAGES), produced, name)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_quantized_bundle_passes_its_gate_and_decodes_like_onnx_runtime(
    family, bundle, trusted, quantization, decoder
) -> None:
    name, source = family
    result = bundle(name, source, quantization)
    assert result.gate is not None and result.gate.delta_pct <= GATES[quantization]
    types = " ".join(result.manifest.tensor_types.values())
    if quantization == "int8":
        assert "MatMulNBits q8 block" in types
    else:
        assert "MatMulNBits q4" in types
        if source.config.get("tie_word_embeddings"):  # the embedding reads the LM head's blocks
            assert "GatherBlockQuantized q8 block 64 via Reshape" in types
    prompt = _prompt(source, MESSAGES)
    # How far a quantized toy strays from the source is the gate's business; the runtime must run it exactly.
    assert _greedy(result.path, trusted, decoder) == OnnxRunner(result.path).greedy(prompt, NEW_TOKENS)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("family", SLIDING_WINDOW_FAMILIES, indirect=True)
def test_a_prompt_past_the_sliding_window_decodes_like_the_source_model(family, bundle, trusted, decoder) -> None:
    """Gemma 2/3 attend to the last ``sliding_window`` tokens in their local layers: on a prompt longer than
    the window the graph must mask as transformers does (ignoring the window moves these toys' logits by 13-18)."""
    name, source = family
    messages = [("user", " ".join(corpus_lines(30, seed=99))[:500])]
    prompt = _prompt(source, messages)
    assert source.config["sliding_window"] < len(prompt) < source.context_length - NEW_TOKENS
    produced = _greedy(bundle(name, source, "fp32").path, trusted, decoder, messages)
    _assert_decodes_like(source.load_model(), prompt, produced, name)
