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


LD = np.longdouble


def round_to(x: np.ndarray, name: str) -> np.ndarray:
    """Values (float64 or long double) correctly rounded to the named dtype (nearest, ties to even,
    gradual underflow, inf past the largest finite value), handed back as float64 (exactly).

    One rounding, done here rather than by a cast: ml_dtypes 0.6.0's float64 -> bfloat16 cast goes through
    float32, so 1 + 2^-8 + 2^-30 became 1 (two roundings) instead of 1 + 2^-7; 0.7.0 rounds once, and this
    keeps the references independent of the installed version.
    """
    v = np.asarray(x)
    if v.dtype != LD:
        v = v.astype(np.float64)
    # numpy's own casts round once where the hardware or numpy converts directly (checked against
    # _quantize in suite/tests/test_dtypes.py): long double or float64 to float32 and float64, float64 to
    # float16; long double to float16 goes through float64 and bfloat16 through float32, so not those
    if name in ("float32", "float64") or (name == "float16" and v.dtype == np.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            return v.astype(_NP[name]).astype(np.float64)
    if v.dtype != LD:
        return _quantize(v, name)[0]
    return _round_long_double(v, name)


def _round_long_double(v: np.ndarray, name: str) -> np.ndarray:
    """Long double values rounded once to `name`, in float64 arithmetic (long double's is ~8x slower):
    v = hi + lo exactly, hi = v rounded to float64 (the 11 bits of a 64-bit significand beyond float64's
    53 fit in lo). Rounding is monotonic and the dtype's midpoints are float64 values, so hi rounds as v
    does, except where hi is itself a midpoint and lo != 0: then lo's sign picks the neighbour."""
    fi = finfo(name)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        hi = v.astype(np.float64)
        lo = np.where(np.isfinite(hi), (v - hi.astype(LD)).astype(np.float64), 0.0)
        r, quantum = _quantize(hi, name)
        scaled = hi / quantum  # exact: a power of two
        tie = (lo != 0) & np.isfinite(hi) & (scaled - np.floor(scaled) == 0.5)
        if tie.any():
            r = np.where(tie, hi + np.sign(lo) * (quantum / 2), r)
            r = np.where(np.abs(r) > float(fi.max), np.copysign(np.inf, r), r)
    return r


def _quantize(v: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Round float64 or long double values to `name` with one rounding: snap to the dtype's quantum at
    each value (2^(e - p) in its binade, the subnormal quantum below the smallest normal) with np.rint,
    which rounds half to even; scaling by powers of two is exact (the dtype's range lies well inside
    float64's). Returns (rounded, quantum), in v's type."""
    fi = finfo(name)
    p, emin = int(fi.nmant) + 1, int(fi.minexp)  # smallest normal = 2^emin
    one = v.dtype.type(1)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        finite = np.isfinite(v) & (v != 0)
        _, e = np.frexp(np.where(finite, v, one))  # v = f 2^e with f in [0.5, 1)
        q = np.maximum(e.astype(np.int64) - p, emin - p + 1)
        r = np.where(finite, np.ldexp(np.rint(np.ldexp(v, -q)), q), v)
        r = np.where(np.abs(r) > v.dtype.type(float(fi.max)), np.copysign(v.dtype.type(np.inf), r), r)
    return r, np.ldexp(one, q)


def divide_rounded(z: np.ndarray, T: float, name: str) -> np.ndarray:
    """x = z / T correctly rounded to `name` from the exact quotient (z and T exact as given).

    The long double quotient rounded to the dtype can differ from the exact quotient rounded only when
    the long double quotient sits exactly on a midpoint of the dtype's grid (rounding is monotonic and
    midpoints are long doubles), so those rare elements are decided exactly with fractions.Fraction."""
    from fractions import Fraction

    zf = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        q = zf.astype(LD) / LD(T)
        r, quantum = _quantize(q, name)
        tie = np.isfinite(r) & np.isfinite(q) & (np.abs(q - r) * 2 == quantum)
    if tie.any():
        r = r.copy()
        for i in zip(*np.nonzero(tie), strict=True):
            exact = Fraction(float(zf[i])) / Fraction(T)
            mid = Fraction(*q[i].as_integer_ratio())
            if exact != mid:  # an exact tie keeps rint's even choice
                r[i] = q[i] + (quantum[i] if exact > mid else -quantum[i]) / 2
    return r.astype(np.float64)


def spacing(x: np.ndarray, name: str) -> np.ndarray:
    """ULP of the named dtype at |x| (float64 result): numpy's spacing of |x| cast to the dtype, taken on
    values clamped into the dtype's normal range. Below the smallest normal the ULP is the subnormal
    quantum, which is also the spacing at the smallest normal; from the largest finite value up (values
    that round to it, and past it) the spacing just below it, where np.spacing says inf. The clamp also
    keeps the cast fast: numpy casts float64 values that under- or overflow float16 ~35x slower."""
    fi = finfo(name)
    dt = _NP[name]
    top = float(fi.max)
    mag = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.spacing(np.clip(mag, float(fi.smallest_normal), top).astype(dt)).astype(np.float64)
    last = top - float(np.nextafter(dt.type(top), dt.type(0)))
    return np.where(np.isinf(out), last, out)  # NaN stays NaN


def smallest_normal(name: str) -> float:
    return float(finfo(name).smallest_normal)
