"""Keep the exporters' and quantizers' chatter (tracer warnings, one INFO line per node) off the console."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence Python warnings and log records below ERROR while the block runs."""
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


@contextmanager
def no_basic_config() -> Iterator[None]:
    """Import modules that call ``logging.basicConfig(level=INFO)`` at import time (onnxruntime's
    matmul_nbits_quantizer does) without letting them configure the root logger of the whole process."""
    root = logging.getLogger()
    guard = None
    if not root.handlers:
        guard = logging.NullHandler()
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard is not None:
            root.removeHandler(guard)
