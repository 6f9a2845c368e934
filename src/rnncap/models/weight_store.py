"""How a model folder's model.safetensors stores its weights, read back as float32 arrays.

Three storages, chosen when the folder is written (`save_model(..., weights=...)`):

- "float32": every tensor as it is;
- "float16": floating tensors rounded to float16 (half the size);
- "int8": each matrix whose rows split into blocks of `BLOCK` values is stored as int8 codes
  `q` with one float16 scale per block, `w ~ q * scale` where `scale = max|block| / 127`; other
  floating tensors (biases) as float16. A quarter of float32's size; each value within half a
  step (`scale / 2`) of the original.

An int8 tensor `name` sits in the file as `name` (int8, the weight's shape) beside
`name + SCALE_SUFFIX` (float16, shape (..., columns / block)): the file still names every
weight once, with its own shape, and the block size is read from the two shapes. Both readers
of a folder, torch (`rnncap.models.folder`) and NumPy (`rnncap.models.numpy_decoder`), go
through `read_arrays`, so both compute with the same float32 values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnncap.models.files import check_weight_shapes
from rnncap.utils.io import InvalidFileError, first_line

STORAGES = ("float32", "float16", "int8")
BLOCK = 64  # values per int8 scale
SCALE_SUFFIX = ".int8_scale"


def quantize_int8(weight: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(..., C) float -> int8 codes (..., C) and float16 scales (..., C // block)."""
    if weight.shape[-1] % block:
        raise ValueError(
            f"the last axis ({weight.shape[-1]}) does not split into blocks of {block}"
        )
    blocks = weight.astype(np.float32).reshape(*weight.shape[:-1], -1, block)  # (..., n, block)
    scale = (np.abs(blocks).max(axis=-1) / 127.0).astype(np.float16)  # (..., n)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)[..., None]
    codes = np.clip(np.rint(blocks / safe), -127, 127).astype(np.int8)
    return codes.reshape(weight.shape), scale


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 codes (..., C) and float16 scales (..., C // block) -> float32 (..., C)."""
    blocks = codes.reshape(*scale.shape, -1).astype(np.float32)  # (..., n, block)
    return (blocks * scale.astype(np.float32)[..., None]).reshape(codes.shape)


def quantizable(weight: np.ndarray, block: int = BLOCK) -> bool:
    """A floating matrix (or higher) whose rows split into whole blocks."""
    return weight.ndim >= 2 and weight.dtype.kind == "f" and weight.shape[-1] % block == 0


def pack(state: dict[str, np.ndarray], storage: str = "float32") -> dict[str, np.ndarray]:
    """Weight arrays -> the arrays to write for `storage` ("float32" | "float16" | "int8")."""
    if storage not in STORAGES:
        raise ValueError(f"weights storage {storage!r}: expected one of {', '.join(STORAGES)}")
    packed = {}
    for name, weight in state.items():
        if storage == "int8" and quantizable(weight):
            packed[name], packed[name + SCALE_SUFFIX] = quantize_int8(weight)
        elif storage != "float32" and weight.dtype.kind == "f":
            packed[name] = weight.astype(np.float16)
        else:
            packed[name] = weight
    return packed


FLOATS = ("F16", "F32", "F64")  # safetensors dtypes a weight may be stored in (or I8 + scales)


def read_arrays(path: Path, expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    """model.safetensors at `path` as float32 arrays, after checking the names, shapes and
    dtypes in its header against `expected` (name -> shape): each weight floating (F16, F32,
    F64), or int8 beside its float16 scales; InvalidFileError naming the file when it cannot
    be used."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = {k: f.get_slice(k) for k in f.keys()}
            shapes = {k: tuple(s.get_shape()) for k, s in header.items()}
            scales = {k[: -len(SCALE_SUFFIX)]: k for k in shapes if k.endswith(SCALE_SUFFIX)}
            weights = {k: s for k, s in shapes.items() if not k.endswith(SCALE_SUFFIX)}
            check_weight_shapes(path, expected, weights)
            for name, key in scales.items():
                _check_scale(path, name, weights.get(name), shapes[key])
            for name in expected:
                _check_dtype(path, name, header[name].get_dtype(), scales.get(name), header)
            out = {}
            for name in expected:
                value = f.get_tensor(name)
                if name in scales:
                    value = dequantize_int8(value, _read_scale(path, f, scales[name]))
                out[name] = value.astype(np.float32)
            return out
    except (OSError, SafetensorError) as error:
        raise InvalidFileError(
            path, f"truncated or not a safetensors file ({first_line(error)})"
        ) from None


def _check_dtype(path: Path, name: str, dtype: str, scale: str | None, header: dict) -> None:
    if scale is not None:
        scale_dtype = header[scale].get_dtype()
        if dtype != "I8":
            raise InvalidFileError(path, f"tensor {name!r} has scales but is not int8 ({dtype})")
        if scale_dtype != "F16":
            raise InvalidFileError(path, f"tensor {scale!r} is {scale_dtype}, not F16")
    elif dtype not in FLOATS:
        raise InvalidFileError(
            path,
            f"tensor {name!r} is stored as {dtype}: expected one of {', '.join(FLOATS)}, or I8 "
            f"beside {name + SCALE_SUFFIX!r}",
        )


def _read_scale(path: Path, f, key: str) -> np.ndarray:
    scale = f.get_tensor(key)
    if not np.isfinite(scale).all():
        raise InvalidFileError(path, f"tensor {key!r} holds values that are not finite")
    return scale


def _check_scale(path: Path, name: str, shape: tuple | None, scale_shape: tuple) -> None:
    if shape is None:
        raise InvalidFileError(path, f"unexpected {name + SCALE_SUFFIX!r}: no tensor {name!r}")
    columns = shape[-1] if shape else 0
    blocks = scale_shape[-1] if scale_shape else 0
    if (
        len(scale_shape) != len(shape)
        or scale_shape[:-1] != shape[:-1]
        or blocks == 0
        or columns % blocks
    ):
        raise InvalidFileError(
            path,
            f"tensor {name + SCALE_SUFFIX!r} has shape {list(scale_shape)}, which does not split "
            f"{name!r} {list(shape)} into blocks",
        )
