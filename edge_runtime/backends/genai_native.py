"""onnxruntime-genai's C API (``ort_genai_c.h``) through ctypes: the handful of calls the genai decoder makes.

Why not the package's Python binding: its functions hold the GIL while the model runs, so every other Python
thread (the engine's event loop delivering tokens, the host app) stalls for each whole decode step, which cost
our engine more than genai's C++ loop saved (BENCHMARKS.md, "Edge runtime"). ctypes releases the GIL around
every foreign call. The library is the one the installed ``onnxruntime_genai`` package ships; importing the
package first makes it find its onnxruntime.

Every handle is owned by one object here and freed by its ``close()`` (idempotent).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any

import numpy as np

LIBRARY_NAMES = {"linux": "libonnxruntime-genai.so", "darwin": "libonnxruntime-genai.dylib",
                 "win32": "onnxruntime-genai.dll"}

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    # name: (restype, argtypes); every OgaResult* is NULL on success
    "OgaResultGetError": (ctypes.c_char_p, [_P]),
    "OgaDestroyResult": (None, [_P]),
    "OgaCreateModel": (_P, [ctypes.c_char_p, _PP]),
    "OgaDestroyModel": (None, [_P]),
    "OgaCreateGeneratorParams": (_P, [_P, _PP]),
    "OgaGeneratorParamsSetSearchNumber": (_P, [_P, ctypes.c_char_p, ctypes.c_double]),
    "OgaDestroyGeneratorParams": (None, [_P]),
    "OgaCreateGenerator": (_P, [_P, _P, _PP]),
    "OgaDestroyGenerator": (None, [_P]),
    "OgaGenerator_AppendTokens": (_P, [_P, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t]),
    "OgaGenerator_GetLogits": (_P, [_P, _PP]),
    "OgaGenerator_RewindTo": (_P, [_P, ctypes.c_size_t]),
    "OgaTensorGetData": (_P, [_P, _PP]),
    "OgaDestroyTensor": (None, [_P]),
}


class GenaiCallError(RuntimeError):
    """A genai call failed; the message is genai's own."""


class GenaiLibrary:
    """The shared library with the signatures above declared."""

    def __init__(self, package_folder: Path) -> None:
        name = LIBRARY_NAMES.get(sys.platform, LIBRARY_NAMES["linux"])
        self.lib = ctypes.CDLL(str(package_folder / name))  # OSError when absent: the caller falls back
        for function, (restype, argtypes) in _SIGNATURES.items():
            handle = getattr(self.lib, function)
            handle.restype, handle.argtypes = restype, argtypes

    def check(self, result: int | None) -> None:
        if result:
            message = self.lib.OgaResultGetError(result)
            self.lib.OgaDestroyResult(result)
            raise GenaiCallError((message or b"unknown error").decode("utf-8", "replace"))


class NativeModel:
    def __init__(self, library: GenaiLibrary, folder: Path) -> None:
        self.library = library
        self.handle = ctypes.c_void_p()
        library.check(library.lib.OgaCreateModel(str(folder).encode("utf-8"), ctypes.byref(self.handle)))

    def close(self) -> None:
        if self.handle:
            self.library.lib.OgaDestroyModel(self.handle)
            self.handle = ctypes.c_void_p()


class NativeGenerator:
    """One batch-1 sequence of ``model`` with its KV cache; its logits are copied into a reused buffer."""

    def __init__(self, model: NativeModel, max_length: int, vocab_size: int) -> None:
        self.library, lib = model.library, model.library.lib
        self.handle = ctypes.c_void_p()
        params = ctypes.c_void_p()
        model.library.check(lib.OgaCreateGeneratorParams(model.handle, ctypes.byref(params)))
        try:
            self.library.check(lib.OgaGeneratorParamsSetSearchNumber(params, b"max_length", float(max_length)))
            self.library.check(lib.OgaCreateGenerator(model.handle, params, ctypes.byref(self.handle)))
        finally:
            lib.OgaDestroyGeneratorParams(params)
        self._logits = np.empty(vocab_size, dtype=np.float32)
        self._tensor = ctypes.c_void_p()
        self._data = ctypes.c_void_p()

    def append_tokens(self, token_ids: np.ndarray) -> None:
        """Run the model on ``token_ids`` (int32, contiguous) after the cached ones."""
        pointer = token_ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.library.check(self.library.lib.OgaGenerator_AppendTokens(self.handle, pointer, token_ids.size))

    def logits(self) -> np.ndarray:
        """(vocab,) float32 logits after the last token: a buffer overwritten by the next call."""
        lib = self.library.lib
        self.library.check(lib.OgaGenerator_GetLogits(self.handle, ctypes.byref(self._tensor)))
        try:
            self.library.check(lib.OgaTensorGetData(self._tensor, ctypes.byref(self._data)))
            ctypes.memmove(self._logits.ctypes.data, self._data, self._logits.nbytes)  # genai: (1, 1, vocab)
        finally:
            lib.OgaDestroyTensor(self._tensor)
        return self._logits

    def rewind_to(self, length: int) -> None:
        self.library.check(self.library.lib.OgaGenerator_RewindTo(self.handle, length))

    def close(self) -> None:
        if self.handle:
            self.library.lib.OgaDestroyGenerator(self.handle)
            self.handle = ctypes.c_void_p()
