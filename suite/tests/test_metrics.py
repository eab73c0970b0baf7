"""suite.metrics.score / ulp_bound and suite.dtypes.spacing on outputs whose errors are known."""

from __future__ import annotations

import itertools
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cases import Case
from suite.dtypes import DTYPES, np_dtype, round_to, smallest_normal, spacing
from suite.metrics import score, ulp_bound
from suite.ops import OPS, PASSES
from suite.reference import LD, Expected, compute_reference

SMALL_DTYPES = ("float32", "float16", "bfloat16")


def make_expected(values, dtype: str, scale=0.0) -> Expected:
    """An Expected graded in ULPs at max(|value|, scale) (scale 0: plain ULPs at the value)."""
    value = np.asarray(values, dtype=LD)
    with np.errstate(invalid="ignore"):
        unit = spacing(np.fmax(np.abs(value.astype(np.float64)), np.asarray(scale, dtype=np.float64)), dtype)
    return Expected(value=value, unit=unit, dtype=dtype, bound=0.0)


def score_(got, e: Expected, dtype: str, op: str, pass_: str, n: int) -> dict:
    """suite.metrics.score with the bound of (op, pass, n classes)."""
    assert e.dtype == dtype
    return score(got, Expected(e.value, e.unit, e.dtype, ulp_bound(op, pass_, n)), op, pass_)


def nudge(x, k: int, dtype: str) -> np.ndarray:
    """x (exact in dtype) moved k ULPs of dtype away from zero, with np.nextafter in that dtype."""
    a = np.asarray(x, dtype=np.float64).astype(np_dtype(dtype))
    away = np.where(a < 0, -np.inf, np.inf).astype(np_dtype(dtype))
    for _ in range(k):
        a = np.nextafter(a, away)
    return a.astype(np.float64)


# --- ulp_bound ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "forward"), [(1, 6), (2, 6), (3, 8), (4, 8), (5, 10), (1000, 24), (1024, 24),
                                            (1025, 26), (131072, 38), (131071, 38), (262147, 42)])
def test_ulp_bound_values(n, forward):
    for op in OPS:
        assert ulp_bound(op, "forward", n) == forward
        assert ulp_bound(op, "backward", n) == 2 * forward


def test_ulp_bound_grows_with_width():
    bounds = [ulp_bound("softmax", "forward", n) for n in range(1, 5000)]
    assert all(a <= b for a, b in itertools.pairwise(bounds))
    assert all(isinstance(b, float) for b in bounds[:3])


# --- spacing -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "at_one", "at_zero"), [
    ("float16", 2.0**-10, 2.0**-24),
    ("bfloat16", 2.0**-7, 2.0**-133),
    ("float32", 2.0**-23, 2.0**-149),
    ("float64", 2.0**-52, 2.0**-1074),
])
def test_spacing_known_values(dtype, at_one, at_zero):
    got = spacing(np.array([1.0, -1.0, 0.0, 1.5, 2.0, -3.0]), dtype)
    assert got.dtype == np.float64
    assert got.tolist() == [at_one, at_one, at_zero, at_one, 2 * at_one, 2 * at_one]
    assert spacing(np.array(0.75), dtype) == at_one / 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_spacing_past_the_range_uses_the_largest_finite(dtype):
    fmax = float(ml_dtypes.finfo(np_dtype(dtype)).max)
    top = spacing(np.array(fmax), dtype)
    assert top > 0 and np.isfinite(top)
    big = [np.inf, -np.inf] + ([fmax * 4] if fmax * 4 < np.inf else [])
    assert (spacing(np.array(big), dtype) == top).all()


def test_spacing_float16_past_range():
    assert spacing(np.array([1e6, 65504.0, np.inf]), "float16").tolist() == [32.0, 32.0, 32.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_spacing_is_numpys_at_the_value_cast_to_the_dtype(dtype):
    """Every value of float16 and bfloat16 (a sample of float32 and float64), their neighbours' midpoints
    and values under- and overflowing the dtype: numpy's spacing of |x| cast to the dtype, except that a
    value cast to the largest finite one (or past it) gets the spacing just below it, not inf."""
    dt = np_dtype(dtype)
    if dt.itemsize == 2:
        vals = np.arange(1 << 16, dtype=np.uint16).view(dt).astype(np.float64)
    else:  # random bit patterns: every binade, subnormals included
        vals = np.frombuffer(np.random.default_rng(5).bytes(dt.itemsize * 200_000), dtype=dt).astype(np.float64)
    vals = vals[np.isfinite(vals)]
    s = np.sort(np.unique(np.abs(vals)))
    x = np.concatenate([s, (s[:-1] + s[1:]) / 2, s * (1 - 2.0**-30), [1e-320, 1e300, np.inf]])
    fi = ml_dtypes.finfo(dt)
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.spacing(x.astype(dt)).astype(np.float64)
    last = float(fi.max) - float(np.nextafter(dt.type(fi.max), dt.type(0)))
    want = np.where(np.isinf(want) | (x >= float(fi.max)), last, want)
    got = spacing(x, dtype)
    assert np.array_equal(got, want), x[got != want][:5]
    assert np.isnan(spacing(np.array([np.nan]), dtype)).all()


def test_value_rounding_to_the_largest_float16_has_a_finite_ulp():
    """65,500 casts to 65,504 in float16, where np.spacing is inf: an infinite unit would pass any error
    there. Its ULP is 32, as at 65,504."""
    assert spacing(np.array([65500.0, 65503.0]), "float16").tolist() == [32.0, 32.0]


def test_error_at_a_scale_past_the_dtype_range_is_still_graded():
    """A scale beyond float16's range (|x| ~ 6e4 logits give log_softmax scales ~ 1.2e5) is graded
    in ULPs at the largest finite float16 (32): an output 1000 off is 31 ULPs there, > the bound."""
    e = make_expected([0.0, -60000.0], "float16", scale=[120001.0, 60001.0])
    got = np.array([-1024.0, -60000.0])
    r = score_(got, e, "float16", "log_softmax", "forward", 3)
    assert r["ulp_err_scaled"] == pytest.approx(1024 / 32)
    assert r["verdict"] == "inaccurate"


@pytest.mark.parametrize("dtype", SMALL_DTYPES)
def test_spacing_matches_nextafter(dtype):
    rng = np.random.default_rng(0)
    x = round_to(rng.standard_normal(200) * 10.0 ** rng.integers(-3, 3, 200), dtype)
    nxt = nudge(x, 1, dtype)
    assert np.array_equal(np.abs(nxt - x), spacing(x, dtype))


# --- score: exact, perturbed, inaccurate -------------------------------------------------------

SMALL = Case("t_small", "4 ordinary logits in 2 rows", [[0.3, -1.2, 2.5, 0.7], [1.0, 1.5, -0.25, 3.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_output_is_ok(dtype):
    ref = compute_reference(SMALL, dtype)
    for (op, pass_), e in ref.expected.items():
        r = score_(e.want, e, dtype, op, pass_, SMALL.n_classes)
        assert r["verdict"] == "ok", (op, pass_, r)
        assert r["max_ulp_err"] <= 0.5 + 1e-9, (op, pass_, r)
        assert r["ulp_err_scaled"] <= r["max_ulp_err"]
        assert r["max_rel_err"] <= float(ml_dtypes.finfo(np_dtype(dtype)).eps) / 2 * (1 + 1e-9)
        assert r["n_nonfinite"] == 0 and r["n_flushed"] == 0
        assert r["n_elements"] == e.value.size
        assert r["ulp_bound"] == ulp_bound(op, pass_, SMALL.n_classes)
        assert r["message"] == ""


# values a few dozen ULPs away from a binade edge in every dtype tested, so k steps keep the ULP
MID_BINADE = [1.3, -2.6, 0.7, 5.2e-3, -37.5, 1.25e3]


@pytest.mark.parametrize("dtype", SMALL_DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_k_ulps_off_is_reported_as_k(dtype, k):
    e = make_expected(MID_BINADE, dtype)
    bound = ulp_bound("softmax", "forward", 4)  # 8
    for i in range(len(MID_BINADE)):
        got = e.want.copy()
        got[i] = nudge(got[i], k, dtype)
        r = score_(got, e, dtype, "softmax", "forward", 4)
        assert abs(r["max_ulp_err"] - k) <= 0.5 + 1e-9, (i, r)
        assert r["ulp_err_scaled"] == pytest.approx(r["max_ulp_err"])  # scale 0: the ULP at |exact|
        assert r["verdict"] == ("ok" if k <= bound else "inaccurate")


@pytest.mark.parametrize("dtype", SMALL_DTYPES)
def test_more_than_the_bound_is_inaccurate(dtype):
    bound = ulp_bound("logsumexp", "forward", 16)  # 12
    e = make_expected(MID_BINADE, dtype)
    got = e.want.copy()
    got[2] = nudge(got[2], int(bound) + 2, dtype)
    r = score_(got, e, dtype, "logsumexp", "forward", 16)
    assert r["verdict"] == "inaccurate"
    assert bound + 1.5 <= r["max_ulp_err"] <= bound + 2.5
    assert f"bound {bound:g}" in r["message"]
    got[2] = nudge(e.want[2], int(bound) - 1, dtype)
    assert score_(got, e, dtype, "logsumexp", "forward", 16)["verdict"] == "ok"


def test_perturbed_reference_output_float32():
    ref = compute_reference(SMALL, "float32")
    e = ref.expected[("softmax", "forward")]
    got = e.want.copy()
    got[0, 2] = nudge(got[0, 2], 5, "float32")
    r = score_(got, e, "float32", "softmax", "forward", 4)
    assert 4.5 <= r["max_ulp_err"] <= 5.5
    assert r["ulp_err_scaled"] <= r["max_ulp_err"]
    assert r["verdict"] == "ok"
    assert np.isfinite(r["row_sum_dev"]) and r["row_sum_dev"] < 1e-6
    r = score_(e.want * (1 + 1e-3), e, "float32", "softmax", "forward", 4)
    assert r["verdict"] == "inaccurate"
    assert r["max_rel_err"] == pytest.approx(1e-3, rel=1e-3)


def test_scale_softens_the_grade_but_not_max_ulp_err():
    """An error of 100 ULPs at |exact| is 100/2^10 ULPs at a scale 2^10 times larger."""
    e = make_expected([1.0 + 2**-10], "float32", scale=1024.0)
    got = nudge(e.want, 100, "float32")
    r = score_(got, e, "float32", "logsumexp", "forward", 4)
    assert r["max_ulp_err"] == pytest.approx(100, abs=0.5)
    assert r["ulp_err_scaled"] == pytest.approx(100 / 1024, rel=0.01)
    assert r["verdict"] == "ok"


def test_float64_error_measured_beyond_float64():
    """The reference keeps bits beyond float64 (hi + lo): the rounded value is off by < 0.5 ULP,
    the next double by > 0.5 ULP."""
    v = LD(1) / LD(3)
    e = make_expected([v], "float64")
    r0 = score_(e.want, e, "float64", "cross_entropy", "forward", 4)
    assert 0.2 < r0["max_ulp_err"] <= 0.5
    r1 = score_(nudge(e.want, 1, "float64"), e, "float64", "cross_entropy", "forward", 4)
    assert r1["max_ulp_err"] == pytest.approx(1 + r0["max_ulp_err"], abs=1e-6) or \
        r1["max_ulp_err"] == pytest.approx(1 - r0["max_ulp_err"], abs=1e-6)


# --- score: non-finite values -----------------------------------------------------------------

def test_nan_where_finite_expected():
    e = make_expected(MID_BINADE, "float32")
    got = e.want.copy()
    got[[1, 4]] = np.nan
    r = score_(got, e, "float32", "softmax", "forward", 6)
    assert r["verdict"] == "nonfinite"
    assert r["n_nonfinite"] == 2
    assert "2 NaN" in r["message"]


def test_inf_where_finite_expected():
    e = make_expected(MID_BINADE, "float16")
    got = e.want.copy()
    got[0] = np.inf
    got[1] = -np.inf
    got[2] = np.nan
    r = score_(got, e, "float16", "log_softmax", "forward", 6)
    assert r["verdict"] == "nonfinite"
    assert r["n_nonfinite"] == 3
    assert "1 NaN" in r["message"] and "2 inf" in r["message"]


def test_finite_where_nan_expected():
    e = make_expected([np.nan, 0.5], "float32")
    r = score_(np.array([0.25, 0.5]), e, "float32", "log_softmax", "forward", 2)
    assert r["verdict"] == "wrong_special"  # not NaN where the answer is finite: the other way round
    assert r["n_nonfinite"] == 0 and r["n_wrong_special"] == 1
    assert "finite for NaN (1)" in r["message"]


def test_posinf_where_neginf_expected():
    e = make_expected([-np.inf, 1.5], "float32")
    r = score_(np.array([np.inf, 1.5]), e, "float32", "logsumexp", "forward", 3)
    assert r["verdict"] == "wrong_special"
    assert r["n_wrong_special"] == 1 and r["n_nonfinite"] == 0
    assert "+inf for -inf (1)" in r["message"]
    r = score_(np.array([np.nan, 1.5]), e, "float32", "logsumexp", "forward", 3)
    assert r["verdict"] == "wrong_special"
    r = score_(np.array([np.nan, np.nan]), e, "float32", "logsumexp", "forward", 3)
    assert r["verdict"] == "nonfinite"  # NaN where the answer is finite is the headline failure
    assert r["n_nonfinite"] == 1 and r["n_wrong_special"] == 1


def test_matching_specials_are_ok():
    e = make_expected([np.nan, np.inf, -np.inf, 0.5], "float32")
    r = score_(np.array([np.nan, np.inf, -np.inf, 0.5]), e, "float32", "logsumexp", "forward", 3)
    assert r["verdict"] == "ok"
    assert r["n_nonfinite"] == 0
    assert r["max_ulp_err"] == 0.0


@pytest.mark.parametrize("name", ["mask_full_row", "posinf_entry", "nan_entry", "mask_partial",
                                  "mask_target_masked", "mask_causal", "inf_and_neginf"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reference_of_special_cases_scores_ok_against_itself(catalog, name, dtype):
    case = catalog[name]
    ref = compute_reference(case, dtype)
    for (op, pass_), e in ref.expected.items():
        r = score_(e.want, e, dtype, op, pass_, case.n_classes)
        assert r["verdict"] == "ok", (op, pass_, r)
        assert r["n_nonfinite"] == 0


def test_overflow_past_dtype_range_is_inf_in_want():
    """An exact value beyond the dtype's range is +inf once rounded: inf output is right."""
    e = make_expected([1e6], "float16")
    assert e.want[0] == np.inf
    assert score_(np.array([np.inf]), e, "float16", "logsumexp", "forward", 3)["verdict"] == "ok"
    assert score_(np.array([65504.0]), e, "float16", "logsumexp", "forward", 3)["verdict"] == "wrong_special"


# --- score: flush to zero ---------------------------------------------------------------------

SUBNORMAL32 = Case("t_sub", "exp(-95), exp(-100): subnormal in float32", [[0.0, -95.0, -100.0]])


def test_flushed_subnormals_counted_not_graded():
    ref = compute_reference(SUBNORMAL32, "float32")
    e = ref.expected[("softmax", "forward")]
    assert e.tiny.tolist() == [[False, True, True]]
    assert (0 < e.want[0, 1:]).all() and (e.want[0, 1:] < smallest_normal("float32")).all()
    got = e.want.copy()
    got[0, 1:] = 0.0
    r = score_(got, e, "float32", "softmax", "forward", 3)
    assert r["verdict"] == "ok"
    assert r["n_flushed"] == 2
    assert r["max_ulp_err"] <= 0.5
    assert r["ulp_err_scaled"] <= 0.5
    assert "2 subnormal" in r["message"]
    got[0, 1] = e.want[0, 1]  # only one flushed
    assert score_(got, e, "float32", "softmax", "forward", 3)["n_flushed"] == 1


def test_wrong_subnormal_is_graded():
    ref = compute_reference(SUBNORMAL32, "float32")
    e = ref.expected[("softmax", "forward")]
    got = e.want.copy()
    got[0, 1] *= 2
    r = score_(got, e, "float32", "softmax", "forward", 3)
    assert r["n_flushed"] == 0
    assert r["max_ulp_err"] > 1000
    assert r["verdict"] == "inaccurate"


def test_zero_for_a_normal_value_is_not_a_flush():
    e = make_expected([1e-30, 0.5], "float32")
    r = score_(np.array([0.0, round_to(0.5, "float32")]), e, "float32", "softmax", "forward", 2)
    assert r["n_flushed"] == 0
    assert r["verdict"] == "inaccurate"


# --- score: shape ---------------------------------------------------------------------------

def test_wrong_shape_is_error():
    ref = compute_reference(SMALL, "float32")
    e = ref.expected[("softmax", "forward")]
    for bad in (e.want[0], e.want.T, e.want.reshape(-1), e.want[..., None]):
        r = score_(bad, e, "float32", "softmax", "forward", 4)
        assert r["verdict"] == "error"
        assert "shape" in r["message"]
    scalar = ref.expected[("cross_entropy_mean", "forward")]
    assert score_(np.array([scalar.want]), scalar, "float32", "cross_entropy_mean", "forward", 4)["verdict"] \
        == "error"
    assert score_(np.asarray(scalar.want), scalar, "float32", "cross_entropy_mean", "forward", 4)["verdict"] \
        == "ok"


# --- property: the reference rounded to float32 always scores ok ------------------------------

logits_strategy = st.tuples(st.integers(1, 4), st.integers(1, 16)).flatmap(
    lambda shape: hnp.arrays(np.float64, shape,
                             elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False)))


@settings(max_examples=30, deadline=None)
@given(logits=logits_strategy, k=st.integers(1, 20))
def test_rounded_reference_scores_ok(logits, k):
    case = Case("hyp", "hypothesis logits", logits)
    ref = compute_reference(case, "float32")
    for op in OPS:
        for pass_ in PASSES:
            e = ref.expected[(op, pass_)]
            r = score_(e.want, e, "float32", op, pass_, case.n_classes)
            assert r["verdict"] == "ok", (op, pass_, r)
            assert r["ulp_err_scaled"] <= 0.5 + 1e-9
            assert r["max_ulp_err"] <= 0.5 + 1e-9
            assert r["ulp_err_scaled"] <= r["max_ulp_err"]
            # perturbed outputs: the scaled error never exceeds the plain one (scale >= |exact|)
            got = nudge(e.want, k, "float32")
            r = score_(got, e, "float32", op, pass_, case.n_classes)
            assert r["verdict"] in ("ok", "inaccurate")
            assert r["ulp_err_scaled"] <= r["max_ulp_err"] * (1 + 1e-12)
            assert r["max_ulp_err"] >= k / 2 - 0.5 or not np.any(e.want)


def test_bound_formula_matches_docstring():
    for n in (2, 3, 7, 100, 32000):
        assert ulp_bound("softmax", "forward", n) == 4 + 2 * math.ceil(math.log2(n))
