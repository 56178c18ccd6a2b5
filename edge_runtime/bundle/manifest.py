"""manifest.json: what a bundle holds, the inputs of its memory estimate, and how it was checked.

The manifest is written canonically (sorted keys, two-space indent, UTF-8) and signed byte for byte; the
signature covers exactly the bytes on disk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_runtime.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
FORMATS = ("gguf", "onnx")


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    """Lowercase hex."""
    size: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Inputs of the runtime's memory estimate: weight_bytes + kv_bytes_per_token x context tokens."""

    weight_bytes: int
    kv_bytes_per_token: int

    def bytes_for(self, context_tokens: int) -> int:
        return self.weight_bytes + self.kv_bytes_per_token * context_tokens


@dataclass(frozen=True)
class Manifest:
    name: str
    format: str
    """"gguf" (llama.cpp) or "onnx" (ONNX Runtime)."""
    quantization: str
    """As asked for: "f16", "q8_0", "q4_k_m", "int8", "int4"..."""
    architecture: str
    """The source model's ``model_type``."""
    parameters: int
    context_length: int
    model_file: str
    """The file the runtime opens; the others (tokenizer, weights data) sit beside it."""
    memory: MemoryEstimate
    files: dict[str, FileEntry]
    """Every file of the bundle but the manifest and its signature, by "/"-separated relative path."""
    tensor_types: dict[str, str] = field(default_factory=dict)
    """Actual storage type of each weight tensor (quantizers may substitute types)."""
    evaluation: dict[str, Any] = field(default_factory=dict)
    """Results of the numerical check and the quality gate."""
    tool_version: str = ""
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Format-specific facts a runtime needs (e.g. ONNX input names); free-form, signed with the rest."""
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{MANIFEST_FILE} must hold a JSON object")
        if data.get("schema") != SCHEMA_VERSION:
            raise ManifestError(
                f"{MANIFEST_FILE} has schema {data.get('schema')!r}; this runtime reads schema {SCHEMA_VERSION} "
                "(upgrade tandem-inference or re-export the bundle)"
            )
        try:
            memory = MemoryEstimate(**data.pop("memory"))
            files = {name: FileEntry(**entry) for name, entry in data.pop("files").items()}
            manifest = cls(memory=memory, files=files, **data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{MANIFEST_FILE} is missing a field or has an unknown one: {exc}") from exc
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Raise ManifestError naming the first field with a wrong type or value."""
        checks = {
            "name": isinstance(self.name, str) and bool(self.name),
            "format": self.format in FORMATS,
            "quantization": isinstance(self.quantization, str) and bool(self.quantization),
            "architecture": isinstance(self.architecture, str) and bool(self.architecture),
            "parameters": isinstance(self.parameters, int) and self.parameters > 0,
            "context_length": isinstance(self.context_length, int) and self.context_length > 0,
            "model_file": self.model_file in self.files,
            "memory": all(isinstance(v, int) and v >= 0 for v in asdict(self.memory).values()),
            "files": all(
                isinstance(e.sha256, str) and len(e.sha256) == 64 and isinstance(e.size, int) and e.size >= 0
                and not name.startswith("/") and ".." not in name.split("/")
                for name, e in self.files.items()
            ),
        }
        for name, ok in checks.items():
            if not ok:
                raise ManifestError(f"{MANIFEST_FILE} field {name!r} is invalid")
