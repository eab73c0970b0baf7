"""suite.dtypes: one correct rounding to every dtype, and z / T correctly rounded from the exact quotient."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from suite.dtypes import DTYPES, LD, _quantize, divide_rounded, np_dtype, round_to


def test_bfloat16_is_rounded_once():
    """ml_dtypes' float64 -> bfloat16 cast goes through float32: 1 + 2^-8 + 2^-30 became 1."""
    assert round_to(np.array([1 + 2**-8 + 2**-30]), "bfloat16")[0] == 1 + 2**-7
    assert round_to(np.array([1 + 2**-8]), "bfloat16")[0] == 1.0  # an exact tie goes to even


def test_long_double_to_float16_is_rounded_once():
    v = np.array([LD(1) + LD(2.0) ** -11 + LD(2.0) ** -60])
    assert round_to(v, "float16")[0] == 1 + 2**-10


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_paths_agree_with_the_quantizer(dtype):
    rng = np.random.default_rng(3)
    v = rng.standard_normal(20000) * 10.0 ** rng.integers(-45, 45, 20000)
    for x in (v, v.astype(LD) * (1 + LD(2.0) ** -40)):
        with np.errstate(all="ignore"):
            want = _quantize(x.astype(LD), dtype)[0].astype(np.float64)
        np.testing.assert_array_equal(round_to(x, dtype), want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_long_double_midpoints_are_decided_by_the_tail(dtype):
    """Long double values are rounded from their float64 head and tail: where the head is exactly a
    midpoint of the dtype's grid (normal, subnormal, at a binade's edge, at the overflow threshold), a
    tail below float64's precision decides, as the long double quantizer does."""
    from suite.dtypes import finfo

    fi = finfo(dtype)
    rng = np.random.default_rng(11)
    grid = np.unique(round_to(rng.standard_normal(4000) * 10.0 ** rng.integers(-30, 4, 4000), dtype))
    grid = np.concatenate([grid, [float(fi.max), float(fi.smallest_normal), float(fi.smallest_subnormal), 1.0, 2.0]])
    heads = []
    for g in grid.astype(LD):
        with np.errstate(over="ignore"):  # past the largest finite value: inf, handled below
            up = LD(np.nextafter(np_dtype(dtype).type(g), np_dtype(dtype).type(np.inf)).astype(np.float64))
        mid = g + (up - g) / 2 if np.isfinite(up) else g + (g - LD(np.nextafter(
            np_dtype(dtype).type(g), np_dtype(dtype).type(0)).astype(np.float64))) / 2  # the overflow threshold
        heads.append(mid)
    heads = np.array(heads, dtype=LD)
    tail = np.abs(heads) * LD(2.0) ** -60  # below float64's precision: the head stays the midpoint
    v = np.concatenate([heads, heads + tail, heads - tail, -heads - tail, -heads + tail])
    assert (v.astype(np.float64) == np.concatenate([heads, heads, heads, -heads, -heads]).astype(np.float64)).all()
    with np.errstate(all="ignore"):
        want = _quantize(v, dtype)[0].astype(np.float64)
    np.testing.assert_array_equal(round_to(v, dtype), want)
    assert (round_to(heads + tail, dtype) != round_to(heads - tail, dtype)).all()  # the tail did decide


def test_specials_and_range():
    got = round_to(np.array([np.inf, -np.inf, np.nan, -0.0, 1e6, 65519.0, 65520.0, 2.0**-25]), "float16")
    assert np.isinf(got[0]) and got[0] > 0 and np.isinf(got[1]) and got[1] < 0 and np.isnan(got[2])
    assert got[3] == 0 and np.signbit(got[3])
    assert got[4] == np.inf and got[5] == 65504.0 and got[6] == np.inf
    assert got[7] == 0.0  # half the smallest subnormal: a tie, to even (zero)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [0.7, 1e-6, 1e5, 3.0, 0.1, 100.0])
def test_divide_rounded_is_the_nearest_value_to_the_exact_quotient(dtype, T):
    z = round_to(np.random.default_rng(5).standard_normal(300) * 100, dtype)
    got = divide_rounded(z, T, dtype)
    t = np_dtype(dtype).type
    for zi, gi in zip(z, got, strict=True):
        exact = Fraction(float(zi)) / Fraction(T)
        if not np.isfinite(gi):
            assert abs(exact) > Fraction(float(np.finfo(np.float64).max)) or dtype != "float64"
            continue
        for nb in (np.nextafter(t(gi), t(np.inf)), np.nextafter(t(gi), t(-np.inf))):
            if np.isfinite(nb):
                assert abs(Fraction(float(nb)) - exact) >= abs(Fraction(float(gi)) - exact), (zi, T, gi)


def test_divide_rounded_decides_long_double_midpoints_exactly():
    """Where the long double quotient lands exactly on a float32 midpoint while the exact one does not,
    rounding the long double would round twice; the exact value decides."""
    M = Fraction(1) + Fraction(1, 2**24)  # midway between 1 and the next float32
    found = 0
    for k in range(1, 400):
        T = 1 + k * 2.0**-52
        z = float(M * Fraction(T))  # the nearest double to M * T: z / T is M up to ~2^-76
        exact = Fraction(z) / Fraction(T)
        if exact == M or LD(z) / LD(T) != LD(1) + LD(2.0) ** -24:
            continue
        want = 1 + 2**-23 if exact > M else 1.0
        assert divide_rounded(np.array([z]), T, "float32")[0] == want, (k, float(exact - M))
        found += 1
    assert found >= 5  # the path is exercised, above and below the midpoint
