"""ONNX bundles on onnxruntime-genai's generator (``onnx_decoder="genai"``; "auto", the default, where genai is
installed) decode exactly like our own loop on onnxruntime (``"loop"``) and the source model, keep the
engine's stream contract (streaming, stop strings, prefix continuation, cancellation), reuse the KV cache of a
shared prefix, and give way to the loop when genai is missing or cannot map a bundle's graph."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from edge_runtime import (
    BackendUnavailableError,
    EngineOptions,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    Message,
    PrefixTokens,
    SamplingParams,
    SyncEngine,
    UnsupportedBundleError,
    load_bundle,
)
from edge_runtime.bundle import MANIFEST_FILE, Manifest, verify_bundle
from export.bundle_writer import seal_bundle
from tests.edge_runtime.conftest import PROMPT_MESSAGES, source_greedy, source_logits

pytest.importorskip("onnxruntime_genai")

MESSAGES = tuple(Message(role, text) for role, text in PROMPT_MESSAGES)
NEW_TOKENS = 24
LOGPROB_SAME = 1e-4  # the same graph on the same ONNX Runtime kernels: only summation order may differ
NEAR_TIE = 1e-3  # fp32 ONNX vs transformers (test_engine_greedy.NEAR_TIE["fp32"])
GENAI_FOLDERS = "tandem-genai-*"


def _greedy(max_tokens: int = NEW_TOKENS, **fields) -> GenerationRequest:
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, stop=fields.pop("stop", ()))
    return GenerationRequest(messages=fields.pop("messages", MESSAGES), sampling=sampling, **fields)


def _engine(bundle: Path, trusted, decoder: str) -> SyncEngine:
    return SyncEngine(load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(onnx_decoder=decoder)))


def _genai_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(GENAI_FOLDERS))


@pytest.fixture
def genai(bundles, trusted):
    with _engine(bundles("llama", "onnx", "fp32"), trusted, "genai") as engine:
        yield engine


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_tokens_and_logprobs_equal_the_loops_and_the_source_models(bundles, trusted, source_models, family):
    model, tokenizer = source_models(family)
    bundle = bundles(family, "onnx", "fp32")
    with _engine(bundle, trusted, "genai") as engine:
        ours = engine.complete(_greedy())
    with _engine(bundle, trusted, "loop") as engine:
        loop = engine.complete(_greedy())
    assert ours.token_ids == loop.token_ids and ours.text == loop.text
    assert max(abs(a - b) for a, b in zip(ours.logprobs, loop.logprobs, strict=True)) < LOGPROB_SAME
    chat = [{"role": role, "content": text} for role, text in PROMPT_MESSAGES]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    expected = source_greedy(model, prompt, NEW_TOKENS)
    for index, (mine, theirs) in enumerate(zip(ours.token_ids, expected, strict=True)):
        if mine != theirs:  # rounding may flip a near-tie of the source model, nothing else
            logits = source_logits(model, prompt + expected[:index])[-1]
            assert logits[theirs] - logits[mine] <= NEAR_TIE, index
            break


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantized_bundles_decode_like_the_loop(bundles, trusted, quantization):
    bundle = bundles("llama", "onnx", quantization)
    with _engine(bundle, trusted, "genai") as engine:
        ours = engine.complete(_greedy())
    with _engine(bundle, trusted, "loop") as engine:
        loop = engine.complete(_greedy())
    assert ours.token_ids == loop.token_ids
    assert max(abs(a - b) for a, b in zip(ours.logprobs, loop.logprobs, strict=True)) < LOGPROB_SAME


def test_seeded_sampling_picks_the_loops_tokens(bundles, trusted):
    """Our sampler picks every token (genai's own search is never used), so a seed means the same answer."""
    bundle = bundles("llama", "onnx", "fp32")
    request = GenerationRequest(messages=MESSAGES, sampling=SamplingParams(
        temperature=0.9, top_p=0.95, top_k=40, seed=7, max_tokens=NEW_TOKENS, ignore_eos=True))
    with _engine(bundle, trusted, "genai") as engine:
        ours = engine.complete(request)
    with _engine(bundle, trusted, "loop") as engine:
        loop = engine.complete(request)
    assert ours.token_ids == loop.token_ids


def test_streaming_yields_what_collecting_yields_and_a_stop_string_ends_before_it(genai):
    events = list(genai.generate(_greedy()))
    completion = genai.complete(_greedy())
    assert "".join(e.text for e in events) == completion.text
    assert [e.token_id for e in events] == list(completion.token_ids)
    assert all(e.logprob is not None and e.logprob <= 0 for e in events)
    assert events[-1].finish_reason is FinishReason.LENGTH and events[-1].usage.completion_tokens == NEW_TOKENS
    stop = completion.text[10:13]
    stopped = genai.complete(_greedy(stop=(stop,)))
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.text == completion.text[: completion.text.index(stop)]


def test_a_continuation_reuses_the_cached_prefix_and_equals_the_uninterrupted_answer(genai):
    whole = list(genai.generate(_greedy()))
    ids, vocabulary = [event.token_id for event in whole], genai.info.vocabulary
    for cut in (1, 9, 17):
        head = "".join(event.text for event in whole[:cut])
        if not whole[cut - 1].text:
            continue  # a cut inside a character (see test_prefix_tokens)
        rest = genai.complete(_greedy(NEW_TOKENS - cut, assistant_prefix=head,
                                      prefix_tokens=PrefixTokens(vocabulary, tuple(ids[:cut]), head)))
        assert list(rest.token_ids) == ids[cut:], cut
        assert head + rest.text == "".join(event.text for event in whole)
        # the previous sequence holds prompt + the whole answer: all but the last prompt token come from it
        assert rest.usage.cached_tokens == rest.usage.prompt_tokens - 1
    text_prefix = genai.complete(_greedy(8, assistant_prefix=whole[0].text + whole[1].text))
    assert text_prefix.usage.cached_tokens > 0


def test_cancelling_mid_stream_leaves_the_engine_usable_and_the_next_answer_unchanged(genai):
    fresh = genai.complete(_greedy(8))
    other = _greedy(400, messages=(Message("user", "Count the stars over the river, slowly."),))

    stream = genai.generate(other)
    next(stream)
    stream.close()  # leaving the stream cancels the request and returns once the model is free
    assert genai.engine.running == 0
    again = genai.complete(_greedy(8))
    assert again.token_ids == fresh.token_ids and again.logprobs == pytest.approx(fresh.logprobs, abs=LOGPROB_SAME)


def test_the_genai_config_lives_in_a_private_folder_removed_on_close(bundles, trusted):
    bundle = bundles("llama", "onnx", "fp32")
    before = _genai_folders()
    engine = _engine(bundle, trusted, "genai")
    engine.engine.load()
    made = _genai_folders() - before
    assert len(made) == 1 and (made.pop() / "genai_config.json").is_file()
    engine.close()
    assert _genai_folders() == before
    verify_bundle(bundle, trusted)  # nothing was written into the signed bundle


def test_by_default_an_onnx_bundle_decodes_on_genai_where_it_is_installed(bundles, trusted):
    """The default decoder ("auto") is the one that measured faster (BENCHMARKS.md): genai, seen by its folder."""
    assert EngineOptions().onnx_decoder == "auto"
    before = _genai_folders()
    engine = load_bundle(bundles("llama", "onnx", "fp32"), trusted_keys=trusted, options=EngineOptions(lazy=False))
    try:
        assert len(_genai_folders() - before) == 1
    finally:
        engine.close()


def test_a_graph_genai_cannot_map_falls_back_to_the_loop(bundles, trusted, signing_key, tmp_path, caplog):
    """A bundle without config.json (genai needs the model's shape from it) decodes on the loop under "auto"
    (saying why in a debug log) and is refused with a typed error under "genai"."""
    bundle = tmp_path / "no-config"
    shutil.copytree(bundles("llama", "onnx", "fp32"), bundle)
    (bundle / "config.json").unlink()
    manifest = Manifest.from_json((bundle / MANIFEST_FILE).read_bytes())
    seal_bundle(bundle, dataclasses.replace(manifest, files={}), signing_key)
    with caplog.at_level(logging.DEBUG, logger="edge_runtime.loading"), _engine(bundle, trusted, "auto") as engine:
        fallback = engine.complete(_greedy(8))
    assert "decodes with the onnxruntime loop" in caplog.text and "config.json" in caplog.text
    with _engine(bundle, trusted, "loop") as engine:
        assert fallback.token_ids == engine.complete(_greedy(8)).token_ids
    with pytest.raises(UnsupportedBundleError, match="config.json"):
        load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(onnx_decoder="genai", lazy=False))


def test_without_onnxruntime_genai_auto_uses_the_loop_and_genai_says_what_to_install(
    bundles, trusted, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # what `import` sees when it is not installed
    bundle = bundles("llama", "onnx", "fp32")
    with caplog.at_level(logging.DEBUG, logger="edge_runtime.loading"), _engine(bundle, trusted, "auto") as engine:
        assert engine.complete(_greedy(4)).usage.completion_tokens == 4
    assert "onnxruntime-genai, which is not installed" in caplog.text
    with pytest.raises(BackendUnavailableError, match="pip install"):
        load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(onnx_decoder="genai", lazy=False))


def test_the_onnx_decoder_option_is_checked():
    with pytest.raises(InvalidRequestError, match="onnx_decoder must be one of auto, genai, loop"):
        EngineOptions(onnx_decoder="fast")
