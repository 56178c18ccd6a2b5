"""`tandem export import`: a GGUF from elsewhere becomes a signed bundle that the edge runtime runs exactly as
llama.cpp runs the file itself — or, when anything about the file is wrong, a clear error and nothing on disk."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from edge_runtime import GenerationRequest, Message, SamplingParams, SyncEngine, load_bundle
from edge_runtime.bundle import file_sha256, verify_bundle
from export.errors import (
    ConversionError,
    OutputExistsError,
    QualityGateError,
    SourceModelError,
    SpecError,
    UnsupportedArchitectureError,
)
from export.gguf.import_gguf import (
    MODEL_FILE,
    STEPS,
    TokenizerMismatchError,
    default_max_increase_pct,
    import_gguf,
    quantization_name,
    read_gguf,
)
from export.quality import Evaluation, QualityGate
from export.source import SourceModel
from tests.support import invoke

NEW_TOKENS = 12
MESSAGES = [("system", "You answer briefly."), ("user", "The quick brown fox jumps over the lazy dog.")]


@pytest.fixture(scope="module")
def q8_gguf(bundles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF as another tool would hand it over: the tiny Llama, converted and quantized to Q8_0 by llama.cpp."""
    path = tmp_path_factory.mktemp("byo") / "toy-llama.Q8_0.gguf"
    shutil.copyfile(bundles("llama", "gguf", "q8_0") / MODEL_FILE, path)
    return path


@pytest.fixture(scope="module")
def imported(q8_gguf: Path, signing_key, tmp_path_factory: pytest.TempPathFactory):
    steps: list[str] = []
    out = tmp_path_factory.mktemp("imported") / "toy-q8"
    result = import_gguf(q8_gguf, out, signing_key, tool_version="test", on_step=steps.append)
    assert steps == list(STEPS)
    return result


def _llama_cpp_greedy(model_file: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding of the GGUF by llama.cpp itself, without the edge runtime."""
    from llama_cpp import Llama

    llm = Llama(str(model_file), n_ctx=512, verbose=False)
    try:
        return list(itertools.islice(llm.generate(prompt, temp=0.0, top_k=1), new_tokens))
    finally:
        llm.close()


def _llama_cpp_tokens(model_file: Path, text: str, add_bos: bool) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(str(model_file), n_ctx=64, vocab_only=True, verbose=False)
    try:
        return llm.tokenize(text.encode(), add_bos=add_bos, special=True)
    finally:
        llm.close()


def _greedy(**request) -> GenerationRequest:
    return GenerationRequest(
        sampling=SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True), **request
    )


def _chat_ids(tiny_llama: Path) -> list[int]:
    from transformers import AutoTokenizer

    messages = [{"role": role, "content": text} for role, text in MESSAGES]
    return AutoTokenizer.from_pretrained(tiny_llama).apply_chat_template(messages, add_generation_prompt=True)


def _write_gguf(path: Path, arch: str = "llama", tensors: bool = True, **extra: int) -> Path:
    """A small hand-written GGUF: complete metadata and vocabulary, one tensor (llama.cpp needs them all)."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name("hand-written")
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "d"])
    for key, value in extra.items():
        writer.add_uint16(key.replace("_", "."), value)
    if tensors:
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- the bundle -------------------------------------------------------------------------------------------------


def test_the_manifest_is_read_from_the_gguf_itself(imported, q8_gguf: Path, bundles, trusted) -> None:
    manifest = verify_bundle(imported.path, trusted)
    built = verify_bundle(bundles("llama", "gguf", "q8_0"), trusted)  # the same file, built by our own pipeline
    assert manifest == imported.manifest
    assert (manifest.format, manifest.quantization, manifest.architecture) == ("gguf", "q8_0", "llama")
    assert (manifest.parameters, manifest.context_length) == (built.parameters, built.context_length)
    assert manifest.memory == built.memory  # weights from the tensors, K and V in F16 from the attention metadata
    assert manifest.tensor_types == built.tensor_types and "Q8_0" in manifest.tensor_types.values()
    assert manifest.chat_template == built.chat_template and manifest.tool_version == "test"
    # no Hugging Face tokenizer: the runtime tokenizes with llama.cpp over the GGUF's own vocabulary
    assert set(manifest.files) == {MODEL_FILE, "special_tokens_map.json", "generation_config.json"}
    assert manifest.files[MODEL_FILE].sha256 == file_sha256(q8_gguf)
    provenance = manifest.evaluation["imported"]
    reader = gguf.GGUFReader(q8_gguf)
    assert provenance == {
        "source_file": "toy-llama.Q8_0.gguf",
        "sha256": file_sha256(q8_gguf),
        "size": q8_gguf.stat().st_size,
        "general_name": reader.fields["general.name"].contents(),
        "gguf_architecture": "llama",
        "file_type": 7,
        "file_type_name": "MOSTLY_Q8_0",
        "tokenizer": "gguf",
        "tokenizer_files": ["generation_config.json", "special_tokens_map.json"],
        "chat_template": "gguf",
        "end_of_generation_ids": provenance["end_of_generation_ids"],
    }
    eos = reader.fields["tokenizer.ggml.eos_token_id"].contents()
    assert eos in provenance["end_of_generation_ids"]
    assert manifest.evaluation["quality_gate"] is None and manifest.evaluation["tokenizer_check"] is None
    assert manifest.evaluation["bits_per_weight"] == pytest.approx(
        8 * manifest.memory.weight_bytes / manifest.parameters
    )


def test_the_bundle_decodes_raw_prompts_and_chats_exactly_like_llama_cpp(
    imported, q8_gguf, trusted, tiny_llama
) -> None:
    text = "Once upon a time there was"
    prompt = _llama_cpp_tokens(q8_gguf, text, add_bos=True)
    chat = _chat_ids(tiny_llama)
    with SyncEngine(load_bundle(imported.path, trusted_keys=trusted)) as engine:
        raw = engine.complete(_greedy(prompt=text))
        chatted = engine.complete(_greedy(messages=[Message(role, content) for role, content in MESSAGES]))
    assert raw.usage.prompt_tokens == len(prompt)
    assert list(raw.token_ids) == _llama_cpp_greedy(q8_gguf, prompt, NEW_TOKENS)
    # the GGUF's template and special tokens format a chat to the ids the source model's tokenizer gives it
    assert chatted.usage.prompt_tokens == len(chat)
    assert list(chatted.token_ids) == _llama_cpp_greedy(q8_gguf, chat, NEW_TOKENS)


def test_a_hugging_face_tokenizer_is_checked_and_shipped(q8_gguf, signing_key, trusted, tiny_llama, tmp_path) -> None:
    result = import_gguf(q8_gguf, tmp_path / "b", signing_key, tokenizer=tiny_llama)
    manifest = verify_bundle(result.path, trusted)
    assert {MODEL_FILE, "tokenizer.json", "tokenizer_config.json"} <= set(manifest.files)
    assert result.tokenizer == "tokenizer.json" and result.chat_template == "tokenizer"
    assert manifest.evaluation["tokenizer_check"]["tokenizer"]["texts"] >= 6
    assert manifest.evaluation["imported"]["tokenizer"] == "tokenizer.json"
    chat = _chat_ids(tiny_llama)
    with SyncEngine(load_bundle(result.path, trusted_keys=trusted)) as engine:
        completion = engine.complete(_greedy(messages=[Message(role, content) for role, content in MESSAGES]))
    assert completion.usage.prompt_tokens == len(chat)
    assert list(completion.token_ids) == _llama_cpp_greedy(q8_gguf, chat, NEW_TOKENS)


def test_a_tokenizer_of_another_model_is_refused(q8_gguf, signing_key, tiny_qwen2, tmp_path) -> None:
    with pytest.raises(TokenizerMismatchError, match="differently from the GGUF's vocabulary.*Hugging Face folder"):
        import_gguf(q8_gguf, tmp_path / "b", signing_key, tokenizer=tiny_qwen2)
    with pytest.raises(TokenizerMismatchError, match="the reference model's tokenizer"):
        import_gguf(
            q8_gguf,
            tmp_path / "b",
            signing_key,
            reference=SourceModel.open(tiny_qwen2),
            evaluation=Evaluation("some held-out text " * 20, QualityGate(100.0)),
        )
    with pytest.raises(SourceModelError, match="has no tokenizer"):
        import_gguf(q8_gguf, tmp_path / "b", signing_key, tokenizer=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- the quality gate -------------------------------------------------------------------------------------------


def test_the_quality_gate_scores_the_gguf_against_the_reference(
    q8_gguf, signing_key, trusted, tiny_llama, eval_text, tmp_path
) -> None:
    result = import_gguf(
        q8_gguf,
        tmp_path / "b",
        signing_key,
        reference=SourceModel.open(tiny_llama),
        evaluation=Evaluation(eval_text, QualityGate(default_max_increase_pct("q8_0")), 64, 8),
    )
    gate = verify_bundle(result.path, trusted).evaluation["quality_gate"]
    assert gate == result.gate.as_dict()
    assert gate["artifact"] == "imported q8_0 GGUF" and gate["max_increase_pct"] == 1.0
    assert gate["delta_pct"] <= 1.0 and gate["tokens"] == 8 * 63
    assert result.manifest.evaluation["tokenizer_check"]["reference"]["texts"] >= 6


def test_a_failed_quality_gate_writes_nothing(bundles, signing_key, tiny_llama, eval_text, tmp_path) -> None:
    with pytest.raises(QualityGateError, match=r"imported q4_k_m GGUF: perplexity .* above the source model's"):
        import_gguf(
            bundles("llama", "gguf", "q4_k_m") / MODEL_FILE,
            tmp_path / "b",
            signing_key,
            reference=SourceModel.open(tiny_llama),
            evaluation=Evaluation(eval_text, QualityGate(0.0), 64, 8),
        )
    assert list(tmp_path.iterdir()) == []


def test_the_gate_needs_both_a_reference_and_text(q8_gguf, signing_key, tiny_llama, eval_text, tmp_path) -> None:
    with pytest.raises(SpecError, match=r"--eval-data\) needs a reference model \(--reference"):
        import_gguf(q8_gguf, tmp_path / "b", signing_key, evaluation=Evaluation(eval_text, QualityGate(1.0)))
    with pytest.raises(SpecError, match=r"needs held-out text"):
        import_gguf(q8_gguf, tmp_path / "b", signing_key, reference=SourceModel.open(tiny_llama))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("file_type", "name", "gate"),
    [
        (0, "f32", 0.1),
        (1, "f16", 0.5),
        (32, "bf16", 0.5),
        (7, "q8_0", 1.0),
        (7 | 1024, "q8_0", 1.0),
        (15, "q4_k_m", 10.0),
        (3, "q4_1", 10.0),
        (18, "q6_k", 10.0),
        (30, "iq4_xs", 10.0),
        (999, "file_type_999", 10.0),
    ],
)
def test_quantization_names_follow_llama_cpp_file_types(file_type: int, name: str, gate: float) -> None:
    assert quantization_name(file_type) == name
    assert default_max_increase_pct(name) == gate


# --- files that are not what they should be ---------------------------------------------------------------------


def test_what_is_not_a_gguf_file_is_refused_with_what_to_do(q8_gguf, tmp_path) -> None:
    with pytest.raises(SourceModelError, match="does not exist; pass the path of one .gguf model file"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(SourceModelError, match="is a folder"):
        read_gguf(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(SourceModelError, match=r"not a GGUF file \(it starts with .*, not b'GGUF'\)"):
        read_gguf(tmp_path / "model.safetensors")
    (tmp_path / "cut.gguf").write_bytes(q8_gguf.read_bytes()[:2000])
    with pytest.raises(SourceModelError, match="cannot be read as GGUF .* truncated or corrupt"):
        read_gguf(tmp_path / "cut.gguf")


def test_split_and_unsupported_ggufs_are_refused(tmp_path) -> None:
    shard = _write_gguf(tmp_path / "m-00001-of-00002.gguf", split_count=2, split_no=0)
    with pytest.raises(SourceModelError, match=r"shard 1 of 2 of a split GGUF.*llama-gguf-split --merge"):
        read_gguf(shard)
    with pytest.raises(UnsupportedArchitectureError, match=r"'gpt2' model; the edge runtime runs .*llama.*qwen2"):
        read_gguf(_write_gguf(tmp_path / "gpt2.gguf", arch="gpt2"))
    with pytest.raises(SourceModelError, match="holds no tensors"):
        read_gguf(_write_gguf(tmp_path / "empty.gguf", tensors=False))


def test_a_gguf_llama_cpp_cannot_load_writes_nothing(signing_key, tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    broken = _write_gguf(tmp_path / "in" / "broken.gguf")
    facts = read_gguf(broken)  # its metadata reads fine: only llama.cpp finds the missing tensors
    assert (facts.architecture, facts.quantization, facts.context_length) == ("llama", "f32", 64)
    assert facts.kv_bytes_per_token == 1 * 1 * (4 + 4) * 2
    with pytest.raises(ConversionError, match=r"llama.cpp cannot load broken.gguf \(.*\): .*re-convert or re-quantize"):
        import_gguf(broken, tmp_path / "out" / "b", signing_key)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_existing_bundle_is_replaced_only_when_asked(imported, q8_gguf, signing_key, trusted, tmp_path) -> None:
    with pytest.raises(OutputExistsError, match="already exists"):
        import_gguf(q8_gguf, imported.path, signing_key)
    verify_bundle(imported.path, trusted)
    out = tmp_path / "b"
    import_gguf(q8_gguf, out, signing_key, name="first")
    import_gguf(q8_gguf, out, signing_key, name="second", overwrite=True)
    assert verify_bundle(out, trusted).name == "second"
    with pytest.raises(SpecError, match="overwriting it would delete"):
        import_gguf(shutil.copyfile(q8_gguf, out / "inside.gguf"), out, signing_key, overwrite=True)


# --- the command ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.signing_keys import generate_keypair

    private, _ = generate_keypair(tmp_path_factory.mktemp("keys") / "team")
    return private


def test_the_command_imports_verifies_and_summarises(q8_gguf, key_file, tiny_llama, eval_text, tmp_path) -> None:
    out = tmp_path / "toy-q8"
    (tmp_path / "eval.txt").write_text(eval_text)
    result = invoke(
        "export",
        "import",
        str(q8_gguf),
        str(out),
        "--signing-key",
        str(key_file),
        "--reference",
        str(tiny_llama),
        "--eval-data",
        str(tmp_path / "eval.txt"),
        "--max-increase-pct",
        "50",
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "toy-llama.Q8_0.gguf",
        "llama,",
        "q8_0 (",
        "512 tokens",
        "bytes of KV cache per token",
        "llama.cpp, the GGUF's own vocabulary",
        "from the GGUF",
        "perplexity (reference -> bundle)",
        "gate 50 %",
    ):
        assert expected in result.output
    verified = invoke("export", "verify", str(out), "--public-key", str(key_file.with_suffix(".pub")))
    assert verified.exit_code == 0, verified.output
    assert "OK:" in verified.output and "gguf q8_0" in verified.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluation"]["quality_gate"]["max_increase_pct"] == 50.0


def test_the_command_reports_mistakes_in_one_line_and_writes_nothing(q8_gguf, key_file, tmp_path) -> None:
    (tmp_path / "eval.txt").write_text("held-out text")
    (tmp_path / "notes.gguf").write_text("not a model")
    out = tmp_path / "b"
    for args, message in (
        (["--eval-data", str(tmp_path / "eval.txt")], "--eval-data needs --reference"),
        (["--reference", str(tmp_path)], "--reference needs --eval-data"),
    ):
        result = invoke("export", "import", str(q8_gguf), str(out), "--signing-key", str(key_file), *args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    result = invoke("export", "import", str(tmp_path / "notes.gguf"), str(out), "--signing-key", str(key_file))
    assert result.exit_code == 2 and "is not a GGUF file" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.txt", "notes.gguf"]
