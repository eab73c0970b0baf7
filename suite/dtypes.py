"""Dtype names shared by every backend, and the numpy-side facts about them (ULPs, ranges).

bfloat16 comes from ml_dtypes so that numpy can hold, round and measure it like any other dtype.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")

_NP = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds values of the named dtype."""
    return _NP[name]


def finfo(name: str):
    """ml_dtypes.finfo understands bfloat16 as well as the IEEE types."""
    return ml_dtypes.finfo(_NP[name])


def unit_roundoff(name: str) -> float:
    return float(finfo(name).eps) / 2


def round_to(x: np.ndarray, name: str) -> np.ndarray:
    """Round float64 values to the named dtype and hand them back as float64 (exactly)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float64).astype(_NP[name]).astype(np.float64)


def spacing(x: np.ndarray, name: str) -> np.ndarray:
    """ULP of the named dtype at |x| (float64 result); values past the dtype's range use the
    spacing at its largest finite value, zero uses the smallest subnormal."""
    fi = finfo(name)
    top = float(fi.max)
    mag = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.spacing(np.minimum(mag, top).astype(_NP[name])).astype(np.float64)
    last = top - float(np.nextafter(_NP[name].type(top), _NP[name].type(0)))  # np.spacing(max) is inf
    return np.where(mag >= top, last, out)


def smallest_normal(name: str) -> float:
    return float(finfo(name).smallest_normal)
