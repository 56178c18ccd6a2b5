"""The inputs and outputs of an exported decoder, and the layout of its KV cache.

Optimum's "text-generation-with-past" graphs take ``input_ids``, ``attention_mask`` (past + new tokens),
``position_ids`` and one ``past_key_values.{layer}.key|value`` pair per layer, and return ``logits`` and
``present.{layer}.key|value``. The runtime needs those names, the cache's shape and its element type: they
are read from the graph itself (never assumed from the config) and written into the manifest's ``extra``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from export.errors import ConversionError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

PAST_INPUT = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
PAST_KEY, PAST_VALUE = "past_key_values.{layer}.key", "past_key_values.{layer}.value"
PRESENT_KEY, PRESENT_VALUE = "present.{layer}.key", "present.{layer}.value"

# ONNX Runtime's type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    """numpy name: "float32", "int64"..."""
    shape: tuple[Dim, ...]
    """Fixed sizes as ints, symbolic ones by name ("batch_size", "past_sequence_length")."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _dim(value: object, index: int) -> Dim:
    if isinstance(value, int) and value > 0:
        return value
    return str(value) if value else f"dim{index}"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> Signature:
        from onnx import helper

        initializers = {t.name for t in model.graph.initializer}

        def spec(value: onnx.ValueInfoProto) -> TensorSpec:
            tensor = value.type.tensor_type
            dims = tuple(_dim(d.dim_value or d.dim_param, i) for i, d in enumerate(tensor.shape.dim))
            return TensorSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name, dims)

        inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
        return cls(inputs, tuple(spec(v) for v in model.graph.output))

    @classmethod
    def from_session(cls, session: onnxruntime.InferenceSession) -> Signature:
        def specs(args: Iterable[onnxruntime.NodeArg]) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(a.name, _ORT_TYPES.get(a.type, a.type), tuple(_dim(d, i) for i, d in enumerate(a.shape)))
                for a in args
            )

        return cls(specs(session.get_inputs()), specs(session.get_outputs()))

    # --- what the decoder loop needs -----------------------------------------------------------------

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    @property
    def past(self) -> tuple[TensorSpec, ...]:
        """The past key/value inputs, ordered by layer, key before value."""
        found = [(PAST_INPUT.match(s.name), s) for s in self.inputs]
        return tuple(
            spec for match, spec in sorted(
                ((m, s) for m, s in found if m), key=lambda item: (int(item[0][1]), item[0][2] != "key")
            )
        )

    @staticmethod
    def present_name(past_name: str) -> str:
        return past_name.replace("past_key_values.", "present.", 1)

    def validate(self) -> None:
        """Raise ConversionError unless this is a decoder with a KV cache the runner can drive."""
        names = {spec.name for spec in self.inputs}
        missing = [name for name in ("input_ids",) if name not in names]
        if missing or self.output("logits") is None:
            raise ConversionError(
                f"the ONNX graph lacks {', '.join(missing) or 'the logits output'}; is it a causal LM export?"
            )
        past = self.past
        if not past or len(past) % 2:
            raise ConversionError("the ONNX graph has no complete past_key_values inputs (export with the KV cache)")
        for spec in past:
            if self.output(self.present_name(spec.name)) is None:
                raise ConversionError(f"the ONNX graph has input {spec.name} but no {self.present_name(spec.name)}")
            if len(spec.shape) != 4 or not all(isinstance(d, int) for d in (spec.shape[1], spec.shape[3])):
                raise ConversionError(
                    f"{spec.name} has shape {list(spec.shape)}; expected (batch, kv_heads, past_length, head_dim)"
                )

    @property
    def num_layers(self) -> int:
        return len(self.past) // 2

    @property
    def kv_dtype(self) -> str:
        return self.past[0].dtype

    def empty_past(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Zero-length past key/values of the graph's own shapes and type (the first step of a sequence)."""
        return {
            spec.name: np.zeros((batch, spec.shape[1], 0, spec.shape[3]), dtype=np.dtype(spec.dtype))
            for spec in self.past
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable description for the manifest's ``extra``: names, types, shapes, cache layout."""
        first = self.past[0]
        logits = self.output("logits")
        return {
            "inputs": [spec.as_dict() for spec in self.inputs],
            "outputs": [spec.as_dict() for spec in self.outputs],
            "input_ids": "input_ids",
            "attention_mask": "attention_mask" if self.input("attention_mask") else None,
            "position_ids": "position_ids" if self.input("position_ids") else None,
            "logits": "logits",
            "vocab_size": logits.shape[-1] if logits and isinstance(logits.shape[-1], int) else None,
            "kv_cache": {
                "num_layers": self.num_layers,
                "num_kv_heads": first.shape[1],
                "head_dim": first.shape[3],
                "dtype": first.dtype,
                "layout": ["batch_size", "num_kv_heads", "sequence_length", "head_dim"],
                "past_key": PAST_KEY,
                "past_value": PAST_VALUE,
                "present_key": PRESENT_KEY,
                "present_value": PRESENT_VALUE,
                "empty_past": "feed zero-length past tensors (sequence_length 0) on the first step",
            },
        }
