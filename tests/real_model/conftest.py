"""The real pretrained model (SmolLM2-135M-Instruct, ``real_model``) on both sides: a signed q8_0 GGUF bundle of
it for the device, built once per session with the export pipeline, and the CPU engine over its Hugging Face
folder for the cloud. Every test here is ``slow``: they run a 135M-parameter model on the CPU."""

from __future__ import annotations

from typing import Any

import pytest

QUANTIZATION = "q8_0"
EVAL_CHARS = 20_000
EVAL_WINDOW = 128
EVAL_WINDOWS = 8
CONTEXT = 2048
"""KV cache tokens of both engines: the chats here are a few hundred tokens; the model's own 8,192 would only
cost memory."""
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]



@pytest.fixture(scope="session")
def real_bundle(real_model, signing_key, tmp_path_factory) -> Any:
    """``export.gguf.pipeline.GgufBundle``: the real model as a signed q8_0 bundle, numerically checked and
    quality-gated (q8_0's default gate) on held-out English (the Python reference)."""
    from export.gguf.pipeline import build_gguf_bundle
    from export.pretrained import reference_text
    from export.quality import Evaluation, QualityGate
    from export.source import SourceModel

    evaluation = Evaluation(reference_text(EVAL_CHARS), QualityGate.default_for(QUANTIZATION), window=EVAL_WINDOW,
                            max_windows=EVAL_WINDOWS)
    out = tmp_path_factory.mktemp("real-bundle") / f"smollm2-{QUANTIZATION}"
    return build_gguf_bundle(SourceModel.open(real_model.path), out, QUANTIZATION, signing_key,
                             evaluation=evaluation)


@pytest.fixture(scope="session")
def real_reference(real_model) -> Any:
    """(tokenizer, model) of the Hugging Face folder under transformers, float32: what both sides are compared to."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model.path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(real_model.path, local_files_only=True).eval()
    return tokenizer, model


@pytest.fixture(scope="session")
def real_cloud_engine(real_model) -> Any:
    """The cloud's CPU engine over the Hugging Face folder (shared by the tests; replicas serve it). One torch
    thread: on 2 shared cores, two threads decoded this model 5x slower than one (they spin-wait on each other)."""
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    engine = CpuEngine(real_model.path, name="smollm2", version="v1",
                       options=CpuEngineOptions(max_running=4, context_length=CONTEXT, threads=1))
    yield engine
    engine.close()
