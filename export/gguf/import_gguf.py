"""Bring your own GGUF: wrap a GGUF file from any llama.cpp tool into a signed, checked Tandem bundle.

    read      the GGUF's own metadata and tensors (gguf.GGUFReader): architecture, context length, parameters,
              memory estimate, tensor types, quantization (general.file_type), vocabulary and chat template
    copy      the file into the staging folder, hashing it on the way (its sha256 goes into the manifest)
    load      llama.cpp loads the copy and computes finite logits for a few tokens (ConversionError if not)
    tokenizer a Hugging Face tokenizer given with the GGUF (--tokenizer, or the --reference model's) must
              encode fixed texts to the same ids as the GGUF's vocabulary (TokenizerMismatchError if not)
    evaluate  with a reference model: perplexity by transformers vs llama.cpp on the same held-out windows,
              gated like `tandem export gguf` (export.quality.Evaluation)
    seal      the special-token facts beside the model, the manifest with hashes and provenance, the signature

The edge runtime tokenizes a GGUF bundle with the bundle's tokenizer.json where there is one, else with
llama.cpp's tokenizer over the GGUF's own vocabulary; so a bundle imported without --tokenizer holds no Hugging
Face tokenizer at all, only what the runtime reads about special tokens (special_tokens_map.json: the texts
chat templates insert; generation_config.json: the ids generation stops at, those llama.cpp treats as end of
generation). The chat template comes from the GGUF's ``tokenizer.chat_template`` unless --tokenizer has one.

Everything lands in a staging folder that becomes the bundle only when all steps pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

from edge_runtime.bundle import Manifest, MemoryEstimate
from export.atomic import staged_folder
from export.bundle_writer import copy_tokenizer_files, seal_bundle
from export.errors import ConversionError, SourceModelError, SpecError, UnsupportedArchitectureError
from export.gguf.quantize import TensorTypes, read_tensor_types
from export.gguf.runner import GgufScorer
from export.quality import CHECK_PROMPTS, DEFAULT_MAX_INCREASE_PCT, Evaluation, GateResult, hf_window_logits

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from transformers import PreTrainedTokenizerBase

    from export.source import SourceModel

STEPS = ("read", "copy", "load", "tokenizer", "evaluate", "seal")
MODEL_FILE = "model.gguf"  # as export.gguf.pipeline names it: the runtime opens the manifest's model_file
KV_BYTES_PER_ELEMENT = 2  # llama.cpp keeps the KV cache in F16 by default (as export.gguf.pipeline assumes)
GGUF_MAGIC = b"GGUF"
LOAD_CHECK_CONTEXT = 64
"""Tokens of context for the load check: it evaluates a handful of tokens only."""
TOKENIZER_CHECK_TEXTS = (
    *CHECK_PROMPTS,
    "Hello world! It's 2024, isn't it?",
    "The quick brown fox\njumps over  the lazy dog.",
)
"""Texts a Hugging Face tokenizer and the GGUF's vocabulary must encode to the same ids. None starts with
whitespace: there llama.cpp's SentencePiece tokenizer and Hugging Face's part ways even on the same vocabulary
(measured on the Mistral toy model: two leading spaces), which says nothing about a wrong tokenizer."""
SPECIAL_ROLES = {
    "bos": gguf.Keys.Tokenizer.BOS_ID,
    "eos": gguf.Keys.Tokenizer.EOS_ID,
    "eot": gguf.Keys.Tokenizer.EOT_ID,
    "eom": gguf.Keys.Tokenizer.EOM_ID,
    "unk": gguf.Keys.Tokenizer.UNK_ID,
    "pad": gguf.Keys.Tokenizer.PAD_ID,
}
"""Special tokens the GGUF names by id."""
_READ_ERRORS = (ValueError, OSError, IndexError, KeyError, TypeError, UnicodeDecodeError)
"""What gguf.GGUFReader raises on a truncated or corrupt file (it parses with numpy memmaps and struct views)."""


class TokenizerMismatchError(SpecError):
    """A Hugging Face tokenizer given with a GGUF encodes text to other ids than the GGUF's vocabulary."""


GGUF_MODEL_TYPES = {
    "llama": "llama",  # llama.cpp's converter writes Mistral and other Llama-shaped models as "llama" too
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
    "smollm3": "smollm3",
}
"""GGUF ``general.architecture`` -> the Hugging Face ``model_type`` that bundle manifests and the edge runtime
name architectures by (where they differ; another GGUF architecture is looked up under its own name)."""


def runtime_architecture(gguf_arch: str) -> str | None:
    """The manifest architecture of a GGUF architecture, None where the edge runtime does not run it."""
    from edge_runtime.backends.gguf import ARCHITECTURES

    model_type = GGUF_MODEL_TYPES.get(gguf_arch, gguf_arch)
    return model_type if model_type in ARCHITECTURES else None


def supported_gguf_architectures() -> list[str]:
    from edge_runtime.backends.gguf import ARCHITECTURES

    return sorted(gguf_arch for gguf_arch, model_type in GGUF_MODEL_TYPES.items() if model_type in ARCHITECTURES)


def quantization_name(file_type: int) -> str:
    """llama.cpp's ``general.file_type`` as a lowercase name: 15 -> "q4_k_m", 3 -> "q4_1", 1 -> "f16"."""
    file_type &= ~int(gguf.LlamaFileType.GUESSED)  # llama.cpp flags a type it guessed from the tensors
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"file_type_{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def default_max_increase_pct(quantization: str) -> float:
    """The quality gate for an imported type: the documented one where there is one (export.quality); other
    8-bit types share q8_0's, and every other quantized type (5, 6, 4 bits and below) the 4-bit gate."""
    if quantization in DEFAULT_MAX_INCREASE_PCT:
        return DEFAULT_MAX_INCREASE_PCT[quantization]
    return DEFAULT_MAX_INCREASE_PCT["q8_0" if quantization.startswith("q8") else "q4_0"]


@dataclass(frozen=True)
class GgufVocabulary:
    """What the GGUF says about its tokenizer."""

    model: str
    """``tokenizer.ggml.model``: "gpt2" (byte-level BPE), "llama" (SentencePiece)..."""
    tokens: list[str]
    special_ids: dict[str, int]
    """"bos" / "eos" / "eot" / "eom" / "unk" / "pad" -> id, where the GGUF names them."""
    add_bos: bool | None
    chat_template: str | None

    def token(self, role: str) -> str | None:
        token_id = self.special_ids.get(role)
        return self.tokens[token_id] if token_id is not None and 0 <= token_id < len(self.tokens) else None


@dataclass(frozen=True)
class GgufFile:
    """A GGUF file's facts, read from its own metadata and tensors."""

    path: Path
    architecture: str
    """The Hugging Face ``model_type`` the manifest records (``GGUF_MODEL_TYPES``)."""
    gguf_architecture: str
    general_name: str | None
    file_type: int | None
    """``general.file_type`` (llama.cpp's LlamaFileType), None where the file does not say."""
    quantization: str
    context_length: int
    parameters: int
    kv_bytes_per_token: int
    tensor_types: TensorTypes
    vocabulary: GgufVocabulary

    @property
    def memory(self) -> MemoryEstimate:
        return MemoryEstimate(self.tensor_types.weight_bytes, self.kv_bytes_per_token)


def _fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    values = {}
    for key, entry in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            values[key] = entry.contents()
        except _READ_ERRORS:  # a field gguf cannot decode is one we do not need
            continue
    return values


def _int(values: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = values.get(key, default)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        value = max(value)  # per-layer values (e.g. head counts): the largest bounds what one layer needs
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SourceModelError(
            f"{path.name} lacks a valid {key} ({value!r}); re-convert it with a current llama.cpp converter"
        )
    return value


def _kv_bytes_per_token(values: dict[str, Any], arch: str, path: Path) -> int:
    """K and V of every layer's KV heads (llama.cpp's F16 cache), from the GGUF's attention metadata."""
    layers = _int(values, gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch), path)
    heads = _int(values, gguf.Keys.Attention.HEAD_COUNT.format(arch=arch), path)
    embedding = _int(values, gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=arch), path)
    kv_heads = values.get(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch), heads)
    per_layer = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    if len(per_layer) != layers or not all(isinstance(n, int) and n >= 0 for n in per_layer):
        raise SourceModelError(f"{path.name} has an invalid head_count_kv ({kv_heads!r}) for {layers} layers")
    key_length = _int(values, gguf.Keys.Attention.KEY_LENGTH.format(arch=arch), path, embedding // heads)
    value_length = _int(values, gguf.Keys.Attention.VALUE_LENGTH.format(arch=arch), path, embedding // heads)
    return sum(per_layer) * (key_length + value_length) * KV_BYTES_PER_ELEMENT


def _vocabulary(values: dict[str, Any], path: Path) -> GgufVocabulary:
    tokens = values.get(gguf.Keys.Tokenizer.LIST)
    if not isinstance(tokens, list) or not tokens:
        raise SourceModelError(
            f"{path.name} holds no vocabulary ({gguf.Keys.Tokenizer.LIST}); the edge runtime tokenizes with it: "
            "re-convert the model with llama.cpp's convert_hf_to_gguf.py"
        )
    special_ids = {
        role: values[key]
        for role, key in SPECIAL_ROLES.items()
        if isinstance(values.get(key), int) and 0 <= values[key] < len(tokens)
    }
    template = values.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    add_bos = values.get(gguf.Keys.Tokenizer.ADD_BOS)
    return GgufVocabulary(
        model=str(values.get(gguf.Keys.Tokenizer.MODEL, "")),
        tokens=tokens,
        special_ids=special_ids,
        add_bos=add_bos if isinstance(add_bos, bool) else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
    )


def read_gguf(path: str | os.PathLike[str]) -> GgufFile:
    """Read and validate a GGUF file's facts; raise SourceModelError (or UnsupportedArchitectureError) saying
    what is wrong with it and what to do."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise SourceModelError(f"{path} {what}; pass the path of one .gguf model file")
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise SourceModelError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); pass a .gguf model file "
            "as llama.cpp's converter or quantizer writes it (Hugging Face folders go through `tandem export gguf`)"
        )
    try:
        reader = gguf.GGUFReader(path)
        values = _fields(reader)
        tensors = list(reader.tensors)
    except _READ_ERRORS as exc:
        raise SourceModelError(
            f"{path} cannot be read as GGUF ({type(exc).__name__}: {exc}): it is truncated or corrupt; copy it again"
        ) from exc
    split_count = values.get(gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
    if isinstance(split_count, int) and split_count > 1:
        shard = values.get(gguf.Keys.Split.LLM_KV_SPLIT_NO, 0)
        raise SourceModelError(
            f"{path.name} is shard {shard + 1} of {split_count} of a split GGUF; a bundle holds one model file: "
            f"merge the shards first (llama-gguf-split --merge {path.name} merged.gguf) and import the merged file"
        )
    arch = values.get(gguf.Keys.General.ARCHITECTURE)
    model_type = runtime_architecture(arch) if isinstance(arch, str) else None
    if model_type is None:
        raise UnsupportedArchitectureError(
            f"{path.name} is a {arch!r} model; the edge runtime runs GGUF models of architecture "
            f"{', '.join(supported_gguf_architectures())}: import one of those, or serve this model from the cloud"
        )
    if not tensors:
        raise SourceModelError(f"{path.name} holds no tensors; it is not a complete model")
    file_type = values.get(gguf.Keys.General.FILE_TYPE)
    if not isinstance(file_type, int) or isinstance(file_type, bool):
        file_type = None
    tensor_types = read_tensor_types(path, quantization_name(file_type) if file_type is not None else None)
    if file_type is not None:
        quantization = quantization_name(file_type)
    else:  # the type most of the weight matrices are stored in
        matrices = [t.tensor_type.name for t in tensors if len([d for d in t.shape if d > 1]) > 1]
        quantization = max(set(matrices), key=matrices.count).lower() if matrices else "f32"
    name = values.get(gguf.Keys.General.NAME)
    return GgufFile(
        path=path,
        architecture=model_type,
        gguf_architecture=arch,
        general_name=name if isinstance(name, str) else None,
        file_type=file_type,
        quantization=quantization,
        context_length=_int(values, gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch), path),
        parameters=sum(int(t.n_elements) for t in tensors),
        kv_bytes_per_token=_kv_bytes_per_token(values, arch, path),
        tensor_types=tensor_types,
        vocabulary=_vocabulary(values, path),
    )


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target``; return the sha256 of the bytes copied."""
    digest = hashlib.sha256()
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(1 << 22):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


class LlamaCppCheck:
    """The copied GGUF loaded by llama.cpp, as the edge runtime will load it: its vocabulary size, its
    end-of-generation ids and its tokenizer. Close it (or use ``with``)."""

    def __init__(self, model_file: Path, name: str) -> None:
        """``name``: the file as the user knows it (``model_file`` is its copy in the bundle)."""
        import llama_cpp

        self.name = name

        self._llama_cpp = llama_cpp
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(model_file),
                n_ctx=LOAD_CHECK_CONTEXT,
                n_batch=LOAD_CHECK_CONTEXT,
                logits_all=True,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConversionError(
                f"llama.cpp cannot load {name} ({exc}): the file is incomplete, or from a llama.cpp "
                "version this runtime's does not read; re-convert or re-quantize it with a current llama.cpp"
            ) from exc
        self.n_vocab = self.llm.n_vocab()

    def probe(self, token_ids: Sequence[int]) -> None:
        """Evaluate a few tokens; raise ConversionError unless every logit is finite."""
        self.llm.reset()
        self.llm.eval(list(token_ids))
        logits = np.asarray(self.llm.scores[: len(token_ids)], dtype=np.float32)
        if logits.shape != (len(token_ids), self.n_vocab) or not np.isfinite(logits).all():
            raise ConversionError(
                f"llama.cpp computes non-finite logits from {self.name}: its weights are "
                "corrupt; convert or quantize the model again"
            )

    def tokenize(self, text: str) -> list[int]:
        """Text to ids as the runtime's llama.cpp fallback tokenizes it (special tokens parsed, no BOS)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def end_of_generation_ids(self) -> list[int]:
        """The ids llama.cpp itself stops generating at (end of sequence, end of turn...)."""
        vocab = self._llama_cpp.llama_model_get_vocab(self.llm.model)
        return [t for t in range(self.n_vocab) if self._llama_cpp.llama_vocab_is_eog(vocab, t)]

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaCppCheck:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def load_hf_tokenizer(folder: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """A Hugging Face tokenizer folder (--tokenizer), local files only."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceModelError(f"{folder} is not a folder; pass the Hugging Face folder that holds tokenizer.json")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
        raise SourceModelError(f"{folder} has no tokenizer (tokenizer.json or tokenizer.model)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise SourceModelError(f"cannot load the tokenizer in {folder}: {exc}") from exc


def check_tokenizer(
    what: str, tokenizer: PreTrainedTokenizerBase, vocabulary: GgufVocabulary, tokenize: Callable[[str], list[int]]
) -> dict[str, int]:
    """Check that a Hugging Face tokenizer and the GGUF's vocabulary agree: the same ids for the fixed texts,
    the same special tokens at the same ids. Raise TokenizerMismatchError naming the first difference."""
    advice = "pass the Hugging Face folder of the model this GGUF was converted from"
    if len(tokenizer) > len(vocabulary.tokens):
        raise TokenizerMismatchError(
            f"{what} has {len(tokenizer)} tokens, the GGUF's vocabulary {len(vocabulary.tokens)}: {advice}"
        )
    for text in TOKENIZER_CHECK_TEXTS:
        expected = tokenizer.encode(text, add_special_tokens=False)
        actual = tokenize(text)
        if expected != actual:
            at = next(
                (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
                min(len(expected), len(actual)),
            )
            raise TokenizerMismatchError(
                f"{what} encodes {text!r} differently from the GGUF's vocabulary (from token {at}: "
                f"{expected[at : at + 4]} vs {actual[at : at + 4]}): {advice}"
            )
    specials = sorted(set(tokenizer.all_special_tokens))
    for token in specials:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or not 0 <= token_id < len(vocabulary.tokens):
            continue
        if vocabulary.tokens[token_id] != token:
            raise TokenizerMismatchError(
                f"{what} has special token {token!r} at id {token_id}, where the GGUF has "
                f"{vocabulary.tokens[token_id]!r}: {advice}"
            )
    return {"texts": len(TOKENIZER_CHECK_TEXTS), "special_tokens": len(specials)}


def _probe_ids(vocabulary: GgufVocabulary, check: LlamaCppCheck) -> list[int]:
    ids = check.tokenize("The device answers short questions on its own.")
    bos = vocabulary.special_ids.get("bos")
    return ([bos] if bos is not None and vocabulary.add_bos else []) + ids[: LOAD_CHECK_CONTEXT - 1] or [0]


def _write_special_tokens(folder: Path, vocabulary: GgufVocabulary, eog_ids: list[int]) -> list[str]:
    """What the runtime reads about special tokens, from the GGUF (only files the Hugging Face folder given
    with --tokenizer did not bring): their texts for chat templates, the ids generation stops at."""
    written = []
    if not (folder / "special_tokens_map.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        tokens = {
            f"{role}_token": vocabulary.token(role)
            for role in ("bos", "eos", "unk", "pad")
            if vocabulary.token(role) is not None
        }
        (folder / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2, ensure_ascii=False) + "\n")
        written.append("special_tokens_map.json")
    if not (folder / "generation_config.json").is_file():
        config: dict[str, Any] = {"eos_token_id": eog_ids}
        for role in ("bos", "pad"):
            if role in vocabulary.special_ids:
                config[f"{role}_token_id"] = vocabulary.special_ids[role]
        (folder / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")
        written.append("generation_config.json")
    return written


@dataclass(frozen=True)
class ImportedBundle:
    path: Path
    manifest: Manifest
    source: GgufFile
    sha256: str
    """Of the imported file (and of the bundle's model file: the same bytes)."""
    tokenizer: str
    """Who tokenizes on the device: "gguf" (llama.cpp over the GGUF's vocabulary) or "tokenizer.json"."""
    chat_template: str | None
    """Where the manifest's chat template came from: "gguf", "tokenizer" or None (no template)."""
    tokenizer_checks: dict[str, dict[str, int]] = field(default_factory=dict)
    gate: GateResult | None = None


def import_gguf(
    source: GgufFile | str | os.PathLike[str],
    out: Path,
    signing_key: Ed25519PrivateKey,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    reference: SourceModel | None = None,
    evaluation: Evaluation | None = None,
    name: str | None = None,
    overwrite: bool = False,
    tool_version: str = "",
    on_step: Callable[[str], None] = lambda step: None,
) -> ImportedBundle:
    """Wrap the GGUF file ``source`` into a signed bundle at ``out``.

    ``tokenizer``: a Hugging Face tokenizer folder whose files (and chat template) go into the bundle, checked
    against the GGUF's vocabulary. ``reference`` with ``evaluation``: the quality gate, the GGUF's perplexity
    against the reference model's on the same held-out windows.
    """
    if evaluation is not None and reference is None:
        raise SpecError(
            "held-out evaluation text (--eval-data) needs a reference model (--reference HF_DIR): the quality gate "
            "compares the GGUF's perplexity with that model's"
        )
    if reference is not None and evaluation is None:
        raise SpecError("a reference model (--reference) needs held-out text to score both on (--eval-data)")
    on_step("read")
    gguf_file = source if isinstance(source, GgufFile) else read_gguf(source)
    out = Path(out)
    if overwrite and gguf_file.path.resolve().is_relative_to(out.resolve()):
        raise SpecError(
            f"{out} holds the GGUF being imported, which overwriting it would delete; write the bundle "
            "to another folder"
        )
    hf_tokenizer = load_hf_tokenizer(tokenizer) if tokenizer is not None else None
    reference_tokenizer = reference.load_tokenizer() if reference is not None else None
    vocabulary = gguf_file.vocabulary
    with staged_folder(out, overwrite=overwrite) as stage:
        on_step("copy")
        model_file = stage / MODEL_FILE
        sha256 = _copy_hashing(gguf_file.path, model_file)

        on_step("load")
        with LlamaCppCheck(model_file, gguf_file.path.name) as check:
            if check.n_vocab != len(vocabulary.tokens):
                raise ConversionError(
                    f"llama.cpp reads {check.n_vocab} tokens from {gguf_file.path.name}, its metadata lists "
                    f"{len(vocabulary.tokens)}: the file is inconsistent; convert the model again"
                )
            check.probe(_probe_ids(vocabulary, check))
            eog_ids = check.end_of_generation_ids()

            on_step("tokenizer")
            checks: dict[str, dict[str, int]] = {}
            if hf_tokenizer is not None:
                checks["tokenizer"] = check_tokenizer(
                    f"the tokenizer in {tokenizer}", hf_tokenizer, vocabulary, check.tokenize
                )
            if reference is not None and reference_tokenizer is not None:
                checks["reference"] = check_tokenizer(
                    f"the reference model's tokenizer ({reference.path})",
                    reference_tokenizer,
                    vocabulary,
                    check.tokenize,
                )

        on_step("evaluate")
        gate = None
        if evaluation is not None and reference is not None:
            window_tokenizer = hf_tokenizer or reference_tokenizer
            windows = evaluation.windows(window_tokenizer, min(gguf_file.context_length, reference.context_length))
            model = reference.load_model()
            with GgufScorer(model_file, n_ctx=max(map(len, windows))) as scorer:
                gate = evaluation.check(
                    f"imported {gguf_file.quantization} GGUF", windows, hf_window_logits(model), scorer.logits
                )
            del model

        on_step("seal")
        template, template_source = vocabulary.chat_template, "gguf" if vocabulary.chat_template else None
        tokenizer_files: list[str] = []
        if hf_tokenizer is not None and tokenizer is not None:
            tokenizer_files = copy_tokenizer_files(Path(tokenizer), stage)
            if isinstance(hf_tokenizer.chat_template, str) and hf_tokenizer.chat_template.strip():
                template, template_source = hf_tokenizer.chat_template, "tokenizer"
        tokenizer_files += _write_special_tokens(stage, vocabulary, eog_ids)
        runs_on = "tokenizer.json" if (stage / "tokenizer.json").is_file() else "gguf"
        draft = Manifest(
            name=name or out.name,
            format="gguf",
            quantization=gguf_file.quantization,
            architecture=gguf_file.architecture,
            parameters=gguf_file.parameters,
            context_length=gguf_file.context_length,
            model_file=MODEL_FILE,
            memory=gguf_file.memory,
            files={},
            tensor_types=gguf_file.tensor_types.types,
            evaluation={
                "imported": {
                    "source_file": gguf_file.path.name,
                    "sha256": sha256,
                    "size": model_file.stat().st_size,
                    "general_name": gguf_file.general_name,
                    "gguf_architecture": gguf_file.gguf_architecture,
                    "file_type": gguf_file.file_type,
                    "file_type_name": _file_type_name(gguf_file.file_type),
                    "tokenizer": runs_on,
                    "tokenizer_files": sorted(tokenizer_files),
                    "chat_template": template_source,
                    "end_of_generation_ids": eog_ids,
                },
                "load_check": {"runtime": "llama.cpp", "n_vocab": len(vocabulary.tokens)},
                "tokenizer_check": checks or None,
                "quality_gate": gate.as_dict() if gate else None,
                "bits_per_weight": gguf_file.tensor_types.bits_per_weight,
                "substituted_tensors": gguf_file.tensor_types.substituted,
            },
            tool_version=tool_version,
            chat_template=template,
        )
        manifest = seal_bundle(stage, draft, signing_key)
        if manifest.files[MODEL_FILE].sha256 != sha256:
            raise ConversionError(f"{gguf_file.path} changed while it was being copied; import it again")
    return ImportedBundle(out, manifest, gguf_file, sha256, runs_on, template_source, checks, gate)


def _file_type_name(file_type: int | None) -> str | None:
    if file_type is None:
        return None
    try:
        return gguf.LlamaFileType(file_type & ~int(gguf.LlamaFileType.GUESSED)).name
    except ValueError:
        return None
