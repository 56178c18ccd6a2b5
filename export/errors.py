"""Errors of the export tool, split by what the caller can do about them.

    ExportError                      base of everything `tandem export` raises on purpose
    ├── SpecError (ValueError)       a model / recipe description is inconsistent: fix the input
    └── OutputExistsError            the output folder is there already: choose another or overwrite
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class of the export tool's errors. The CLI prints the message and exits with status 2."""


class SpecError(ExportError, ValueError):
    """A model or recipe description is inconsistent; the message names the field and the fix."""


class OutputExistsError(ExportError, FileExistsError):
    """The output folder exists and overwriting was not asked for."""
