"""Tandem's export tool, for ML engineers: from a Hugging Face causal LM folder to signed on-device bundles.

Today it holds the toy-model factory (``export.toy_models``) that tests, benchmarks and the demo build
their models with; distillation, GGUF / ONNX conversion, quantization and bundle signing join it. Heavy
libraries (torch, transformers) are imported inside the functions that need them, never at import time.
"""

from importlib.metadata import version as _version

__version__ = _version("tandem-inference")
"""The installed distribution's version, written into every bundle manifest as the exporting tool's."""
