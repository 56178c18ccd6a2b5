"""The tensor table of a GGUF file (name, type, shape, bytes), read by ggml's own GGUF reader.

``gguf.GGUFReader`` builds a Python object for every element of every metadata array before it reaches the
tensors: on a 49,152-token vocabulary (tokens, scores, types and merges) that is seconds per file, spent on
strings the tensor table does not need. ggml's C reader (``gguf_init_from_file``, in the ``libggml-base`` that
llama-cpp-python ships and loads anyway) parses the same file in milliseconds. Where that library cannot be
found the Python reader is used.
"""

from __future__ import annotations

import ctypes
import math
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gguf

from export.errors import ConversionError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str
    """gguf.GGMLQuantizationType name: "Q4_K", "F16", "F32"..."""
    shape: tuple[int, ...]
    """ggml order: ne[0], the row length, first; trailing 1s dropped (at least one dimension)."""
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


_MAX_DIMS = 4
_LIBRARY = {"linux": "libggml-base.so", "darwin": "libggml-base.dylib", "win32": "ggml-base.dll"}


@cache
def _ggml() -> ctypes.CDLL | None:
    """llama-cpp-python's libggml-base with the GGUF reader's signatures declared, or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    path = Path(llama_cpp.__file__).parent / "lib" / _LIBRARY.get(sys.platform, "libggml-base.so")
    try:
        lib = ctypes.CDLL(str(path))
        functions = {
            "gguf_init_from_file": (ctypes.c_void_p, [ctypes.c_char_p, _InitParams]),
            "gguf_free": (None, [ctypes.c_void_p]),
            "gguf_get_n_tensors": (ctypes.c_int64, [ctypes.c_void_p]),
            "gguf_get_tensor_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
            "gguf_get_tensor_type": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
            "gguf_get_tensor_size": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
            "gguf_get_tensor_ne": (ctypes.POINTER(ctypes.c_int64), [ctypes.c_void_p, ctypes.c_int64]),
        }
        for name, (restype, argtypes) in functions.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    return lib


def _shape(dims: list[int]) -> tuple[int, ...]:
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


def read_tensor_infos(model_file: Path) -> list[TensorInfo]:
    """Every tensor of ``model_file`` in file order. ConversionError when it is not a readable GGUF file."""
    lib = _ggml()
    if lib is None:
        return _read_with_python(model_file)
    context = lib.gguf_init_from_file(str(model_file).encode(), _InitParams(True, None))
    if not context:
        raise ConversionError(f"{model_file} is not a readable GGUF file (ggml could not parse its header)")
    try:
        infos = []
        for index in range(lib.gguf_get_n_tensors(context)):
            ne = lib.gguf_get_tensor_ne(context, index)
            infos.append(TensorInfo(
                name=lib.gguf_get_tensor_name(context, index).decode(),
                type_name=gguf.GGMLQuantizationType(lib.gguf_get_tensor_type(context, index)).name,
                shape=_shape([int(ne[dim]) for dim in range(_MAX_DIMS)]),
                n_bytes=int(lib.gguf_get_tensor_size(context, index)),
            ))
        return infos
    finally:
        lib.gguf_free(context)


def _read_with_python(model_file: Path) -> list[TensorInfo]:
    reader = gguf.GGUFReader(model_file)
    return [
        TensorInfo(tensor.name, tensor.tensor_type.name, _shape([int(d) for d in tensor.shape]), int(tensor.n_bytes))
        for tensor in reader.tensors
    ]
