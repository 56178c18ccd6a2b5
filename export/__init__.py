"""Tandem's export tool, for ML engineers: from a Hugging Face causal LM folder to signed on-device bundles.

Its modules are the surface: ``cli`` (`tandem export ...`), ``build`` and ``recipe`` (a recipe to bundles),
``gguf`` / ``onnx`` (one bundle format each), ``distill``, ``calibrate``, ``tasks`` (the task suite and its
models), ``toy_models`` (the offline models tests and benchmarks build). Heavy libraries (torch,
transformers) are imported inside the functions that need them, never at import time.
"""

from importlib.metadata import version as _version

__version__ = _version("tandem-inference")
"""The installed distribution's version, written into every bundle manifest as the exporting tool's."""

__all__ = ["__version__"]
