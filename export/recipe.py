"""RECIPE.toml: the whole export pipeline in one file a team commits to its repository.

    [model]
    source = "models/assistant-1b"      # Hugging Face folder (paths are relative to the recipe file)
    name = "assistant"                  # bundle names: <name>-<format>-<quantization>

    [distill]                           # optional: distill a student first; keys as `tandem export distill`
    data = "data/train.jsonl"
    steps = 500
    [distill.student]
    keep_layers = [0, 2, 4]             # or num_hidden_layers / hidden_size / ... (a new, smaller config)

    [evaluation]                        # held-out text for the quality gates
    data = "data/heldout.txt"
    window = 256
    max_windows = 32

    [gates]                             # optional: max perplexity increase in percent, per quantization
    q4_k_m = 8.0

    [signing]
    key = "keys/team.key"               # or key_env = "TANDEM_SIGNING_KEY"

    [[targets]]
    format = "gguf"
    quantization = "q4_k_m"

    [[targets]]
    format = "onnx"
    quantization = "int4"
    block_size = 32                     # onnx int4 options: the fields of export.onnx.options.Int4Options
    head_bits = 8                       # (block_size, algorithm, zero_points, scale_type, head_bits, ...)

Every error names the field (``targets[1].quantization``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import RecipeError, SpecError
from export.onnx.options import Int4Options

FORMAT_QUANTIZATIONS = {
    "gguf": ("f32", "f16", "q8_0", "q4_0", "q4_k_m"),
    "onnx": ("fp32", "int8", "int4"),
}
# Every Int4Options field, so a recipe can ask for what `tandem export onnx` offers.
ONNX_INT4_OPTIONS = tuple(option.name for option in dataclasses.fields(Int4Options))
UNQUANTIZED = ("f32", "f16", "fp32")
_SECTIONS = {"model", "distill", "evaluation", "gates", "signing", "targets"}


@dataclass(frozen=True)
class Target:
    format: str
    quantization: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def bundle_name(self) -> str:
        return f"{self.format}-{self.quantization}"


@dataclass(frozen=True)
class Recipe:
    path: Path
    source: Path
    name: str
    targets: tuple[Target, ...]
    evaluation_data: Path | None
    window: int = 256
    max_windows: int = 32
    gates: dict[str, float] = field(default_factory=dict)
    signing_key: str | None = None
    """A key file's path or PEM text, resolved from ``key`` or ``key_env``."""
    distill: dict[str, Any] | None = None
    """The [distill] table with paths resolved; becomes a DistillConfig once the output folder is known."""


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RecipeError(f"{where}{key} must be a table ([{key}])")
    return value


def _require(table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in table:
        raise RecipeError(f"{where}.{key} is missing")
    return _typed(table[key], f"{where}.{key}", kind)


def _typed(value: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise RecipeError(f"{name}={value!r} must be of type {expected}")
    return value


def _unknown(table: Mapping[str, Any], allowed: set[str] | tuple[str, ...], where: str) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise RecipeError(f"{where}.{extra[0]} is not a recipe field; allowed: {', '.join(sorted(allowed))}")


def _targets(raw: Any) -> tuple[Target, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError("targets is missing or empty; add at least one [[targets]] table")
    targets = []
    for index, entry in enumerate(raw):
        where = f"targets[{index}]"
        if not isinstance(entry, dict):
            raise RecipeError(f"{where} must be a table ([[targets]])")
        fmt = _require(entry, "format", where, str)
        if fmt not in FORMAT_QUANTIZATIONS:
            raise RecipeError(f"{where}.format={fmt!r} is not one of {', '.join(FORMAT_QUANTIZATIONS)}")
        quantization = _require(entry, "quantization", where, str)
        if quantization not in FORMAT_QUANTIZATIONS[fmt]:
            raise RecipeError(
                f"{where}.quantization={quantization!r} is not one of {', '.join(FORMAT_QUANTIZATIONS[fmt])} "
                f"for {fmt}"
            )
        options = {k: v for k, v in entry.items() if k not in ("format", "quantization")}
        allowed = ONNX_INT4_OPTIONS if (fmt, quantization) == ("onnx", "int4") else ()
        _unknown(options, allowed, where)
        if options:
            try:
                Int4Options(**options)
            except SpecError as exc:
                raise RecipeError(f"{where}: {exc}") from exc
        targets.append(Target(fmt, quantization, options))
    names = [t.bundle_name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RecipeError(f"targets lists {duplicates[0]} twice")
    return tuple(targets)


def _signing_key(table: Mapping[str, Any], environ: Mapping[str, str], base: Path) -> str | None:
    _unknown(table, ("key", "key_env"), "signing")
    if "key" in table and "key_env" in table:
        raise RecipeError("signing.key and signing.key_env are both set; keep one")
    if "key_env" in table:
        variable = _typed(table["key_env"], "signing.key_env", str)
        if variable not in environ:
            raise RecipeError(f"signing.key_env names ${variable}, which is not set")
        return environ[variable]
    if "key" not in table:
        return None
    return str(base / _typed(table["key"], "signing.key", str))


def load_recipe(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None, *,
                source: str | os.PathLike[str] | None = None) -> Recipe:
    """Read and validate a recipe; relative paths are resolved against the recipe's folder. ``source`` (a
    command line's, relative to the working folder) replaces [model] source: one committed recipe for the
    model folder a pipeline was handed."""
    recipe_path = Path(path)
    try:
        data = tomllib.loads(recipe_path.read_text())
    except FileNotFoundError as exc:
        raise RecipeError(f"no recipe at {recipe_path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{recipe_path} is not valid TOML: {exc}") from exc
    _unknown(data, _SECTIONS, "recipe")
    base = recipe_path.parent

    def resolve(value: str) -> Path:
        return (base / value).resolve()

    model = _table(data, "model", "")
    _unknown(model, ("source", "name"), "model")
    source = Path(source).resolve() if source is not None else resolve(_require(model, "source", "model", str))
    name = _typed(model.get("name", source.name), "model.name", str)

    evaluation = _table(data, "evaluation", "")
    _unknown(evaluation, ("data", "window", "max_windows"), "evaluation")
    eval_data = resolve(_typed(evaluation["data"], "evaluation.data", str)) if "data" in evaluation else None
    window = _typed(evaluation.get("window", 256), "evaluation.window", int)
    max_windows = _typed(evaluation.get("max_windows", 32), "evaluation.max_windows", int)
    if window < 2 or max_windows < 1:
        raise RecipeError("evaluation.window must be >= 2 and evaluation.max_windows >= 1")

    gates = _table(data, "gates", "")
    for key, value in gates.items():
        _typed(value, f"gates.{key}", (int, float))
        if value < 0:
            raise RecipeError(f"gates.{key}={value} must be >= 0")
    known = {q for quantizations in FORMAT_QUANTIZATIONS.values() for q in quantizations}
    _unknown(gates, known, "gates")

    targets = _targets(data.get("targets"))
    unchecked = [t.bundle_name for t in targets if t.quantization not in UNQUANTIZED]
    if unchecked and eval_data is None:
        raise RecipeError(
            f"evaluation.data is missing: the quantized targets ({', '.join(unchecked)}) need held-out text for "
            "their quality gates"
        )

    distill = _table(data, "distill", "") or None
    if distill is not None:
        distill = _distill(distill, resolve)

    return Recipe(
        path=recipe_path,
        source=source,
        name=name,
        targets=targets,
        evaluation_data=eval_data,
        window=window,
        max_windows=max_windows,
        gates={k: float(v) for k, v in gates.items()},
        signing_key=_signing_key(_table(data, "signing", ""), os.environ if environ is None else environ, base),
        distill=distill,
    )


def _distill(table: dict[str, Any], resolve) -> dict[str, Any]:
    from export.distill.config import DistillConfig, StudentSpec

    fields = {f.name for f in dataclasses.fields(DistillConfig)} - {"teacher", "out", "overwrite", "checkpoint_dir"}
    _unknown(table, fields, "distill")
    settings = dict(table)
    if "data" not in settings:
        raise RecipeError("distill.data is missing")
    settings["data"] = resolve(_typed(settings["data"], "distill.data", str))
    student = settings.get("student", {})
    if not isinstance(student, dict):
        raise RecipeError("distill.student must be a table ([distill.student])")
    _unknown(student, {f.name for f in dataclasses.fields(StudentSpec)}, "distill.student")
    try:
        settings["student"] = StudentSpec(**student)
        DistillConfig(teacher=Path("teacher"), out=Path("student"), **settings)  # validate every field now
    except SpecError as exc:
        raise RecipeError(f"distill: {exc}") from exc
    return settings
