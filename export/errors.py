"""Errors of the export tool, split by what the caller can do about them.

    ExportError                          base of everything `tandem export` raises on purpose
    ├── SpecError (ValueError)           a model / recipe / option is inconsistent: fix the input
    │   └── RecipeError                  a recipe file field is wrong; the message names the field
    ├── OutputExistsError                the output folder is there already: choose another or overwrite
    ├── SourceModelError                 the source model folder is missing, incomplete or corrupt
    │   └── UnsupportedArchitectureError the architecture has no converter (message lists the supported ones)
    ├── ConversionError                  a conversion step failed (e.g. a tokenizer it cannot convert)
    │   └── NumericalMismatchError       a converted model's outputs diverge from the source model's
    ├── QualityGateError                 a quantized artifact lost more quality than the gate allows
    ├── SigningKeyError                  a signing key is missing, unreadable or of the wrong type
    └── TaskBuildError                   the task models' build failed: a training child, or a teacher that
                                         did not learn every family and level it is meant to solve

Errors of bundle *verification* belong to the runtime that loads bundles: ``edge_runtime.bundle``. A folder that
cannot be written (a full disk, a read-only file system, a missing permission) raises the machine-fault family
every package shares, ``edge_runtime.errors.StorageError`` (DiskFullError, ReadOnlyStorageError, ...); the CLI
prints its message and exits with status 1.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class of the export tool's errors. The CLI prints the message and exits with status 2."""


class SpecError(ExportError, ValueError):
    """A model, recipe or option is inconsistent; the message names the field and the fix."""


class RecipeError(SpecError):
    """A recipe file is invalid; the message names the field (e.g. ``targets[1].quantization``)."""


class OutputExistsError(ExportError, FileExistsError):
    """The output folder exists and overwriting was not asked for."""


class SourceModelError(ExportError):
    """The source model folder is missing, incomplete (no config / weights / tokenizer) or corrupt."""


class UnsupportedArchitectureError(SourceModelError):
    """The model's architecture has no converter; the message lists the supported ones."""


class ConversionError(ExportError):
    """A conversion step failed; the message says which and why."""


class NumericalMismatchError(ConversionError):
    """A converted model's outputs diverge from the source model's beyond the tolerance; the message names
    the output (prompt and position) or tensor that diverged and by how much."""


class QualityGateError(ExportError):
    """A quantized artifact's perplexity rose more than its gate allows."""


class SigningKeyError(ExportError):
    """A signing key is missing, unreadable or not an Ed25519 private key."""


class TaskBuildError(ExportError):
    """A task-model build failed (``export.tasks``); the message says which stage and what to do."""
