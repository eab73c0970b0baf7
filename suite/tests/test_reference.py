"""Certifies suite.reference.compute_reference against mpmath at 50 digits.

The exact values are computed here independently, from the plain mathematical definitions, on
x = round_to(z, dtype) / T in mpmath (unbounded exponent, so exp(1e5) needs no shifting), and the
gradients of op(z / T) applied to the Reference's own cotangents. Two requirements:

* at the scale (what `score` grades with): every element within 0.001 float64 ULP of the exact
  value, the ULP taken at max(|exact|, the element's error scale);
* element by element (what `max_ulp_err` / `max_rel_err` report): within TOL_ELEMENT float64 ULP
  at |exact| itself, tiny values included (TOL_ELEMENT_BACKWARD for gradients).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from suite.ops import OPS, PASSES
from suite.reference import EXTENDED, LD, compute_reference

pytestmark = pytest.mark.skipif(not EXTENDED, reason="numpy's long double is no wider than float64 here")

DPS = 50  # significant digits wanted in every exact value
# Working precision: x_i - log(sum exp) and s - onehot cancel up to log10|x| + |log10(result)| digits
# (log_softmax at the max of seed003_linspace1e5 is -9e-88 beside x = 1e5), so the definitions are
# evaluated with enough guard digits that the absolute error (< 1e-380 for |x| <= 1e9) is far below
# 0.001 ULP of any float64, subnormals included.
WORK_DPS = 400
TOL_ULP64 = 1e-3  # allowed distance from the 50-digit value, in float64 ULPs at the element's scale
# Per element (ULP at |exact|): one long-double ULP is 2^-11 = 0.00049 float64 ULP, so 0.001 would be
# two long-double roundings, while the forward algorithm takes a few (exp, log1p, division) and z / T
# is itself rounded before exp amplifies its error by |x|. 0.01 float64 ULP is ~20 long-double ULPs.
TOL_ELEMENT = 1e-2
# Backward, per element: the long-double reference removes the systematic cancellation of the VJP
# formulas (at the dominant class and the CE target, suite.reference.exact_vjp); where g_i happens to
# be close to sum_j g_j s_j (or g_i to s_i sum g) the cancellation stays, and since s itself is known
# to 2^-64, so does an error of a few 2^-64 of the formula's terms. The bound docs/grading.md states:
# TOL_ELEMENT float64 ULP, or 2^-60 of the terms s_i (|g_i| + sum_j |g_j s_j|) / T.
CANCEL_SLACK = 2.0**-60

FINITE_CASES = [
    "seed000_batch", "seed002_T1", "seed002_T10", "seed002_T0.01", "seed003_linspace1e5",
    "seed004_vec", "seed004_big_2d", "log1p_tiny_rest", "log1p_dominant_rows",
    "subnormal_probs_fp64", "subnormal_diffs_fp64", "normal_scale_100", "large_offset_1e6",
    "ties_at_max_small", "exp_edge_fp64_above", "all_negative_fp64",
]
FP16_CASES = ["seed004_vec", "seed002_T1", "log1p_tiny_rest", "ties_at_max_small"]
PARAMS = ([(n, "float64") for n in FINITE_CASES] + [(n, "float32") for n in FINITE_CASES]
          + [(n, "float16") for n in FP16_CASES])


def ld_to_mpf(v) -> mpmath.mpf:
    """A long double, exactly, as an mpmath number (also below float64's range)."""
    v = LD(v)
    if np.isnan(v):
        return mpmath.mpf("nan")
    if np.isinf(v):
        return mpmath.mpf("inf") if v > 0 else mpmath.mpf("-inf")
    if v == 0:
        return mpmath.mpf(0)
    m, e = np.frexp(v)  # m in [0.5, 1) with 64 significant bits: hi + lo holds it exactly
    hi = np.float64(m)
    lo = np.float64(m - LD(hi))
    with mpmath.workdps(DPS):  # 2 x 53 bits: the sum is exact
        return mpmath.ldexp(mpmath.mpf(float(hi)) + mpmath.mpf(float(lo)), int(e))


def exact_values(case, ref, temperature: bool = False) -> dict[tuple[str, str], np.ndarray]:
    """(op, pass) -> object array of mpf, from the definitions on the bits every impl receives,
    x = ref.x (gradients wrt x); with `temperature`, on z / T exactly (gradients wrt z)."""
    z = ref.z if temperature else ref.x
    shape = z.shape
    n = shape[-1]
    rows = z.reshape(-1, n)
    n_rows = rows.shape[0]
    targets = np.asarray(case.targets).reshape(-1)
    probs = ref.probs.reshape(-1, n)
    cot = {op: np.asarray(ref.cotangents[op], dtype=np.float64) for op in OPS}
    g_sm = cot["softmax"].reshape(-1, n)
    g_lsm = cot["log_softmax"].reshape(-1, n)
    g_lse = cot["logsumexp"].reshape(-1)
    g_ce = cot["cross_entropy"].reshape(-1)
    g_mean = mpmath.mpf(float(cot["cross_entropy_mean"]))
    g_soft = cot["soft_cross_entropy"].reshape(-1)
    out: dict[tuple[str, str], list] = {k: [] for k in ((op, p) for op in OPS for p in PASSES)}
    with mpmath.workdps(WORK_DPS):
        T = mpmath.mpf(float(case.temperature) if temperature else 1)
        for r in range(n_rows):
            x = [mpmath.mpf(float(v)) / T for v in rows[r]]
            ex = [mpmath.exp(xi) for xi in x]
            S = mpmath.fsum(ex)
            logS = mpmath.log(S)
            s = [e / S for e in ex]
            lsm = [xi - logS for xi in x]
            t = int(targets[r])
            p = [mpmath.mpf(float(v)) for v in probs[r]]
            onehot = [mpmath.mpf(int(i == t)) for i in range(n)]
            out[("softmax", "forward")] += s
            out[("log_softmax", "forward")] += lsm
            out[("logsumexp", "forward")].append(logS)
            out[("cross_entropy", "forward")].append(logS - x[t])
            out[("soft_cross_entropy", "forward")].append(
                -mpmath.fsum(pi * li for pi, li in zip(p, lsm, strict=True) if pi != 0))
            g = [mpmath.mpf(float(v)) for v in g_sm[r]]
            dot = mpmath.fsum(gi * si for gi, si in zip(g, s, strict=True))
            out[("softmax", "backward")] += [si * (gi - dot) / T for si, gi in zip(s, g, strict=True)]
            g = [mpmath.mpf(float(v)) for v in g_lsm[r]]
            gsum = mpmath.fsum(g)
            out[("log_softmax", "backward")] += [(gi - si * gsum) / T for si, gi in zip(s, g, strict=True)]
            gr = mpmath.mpf(float(g_lse[r]))
            out[("logsumexp", "backward")] += [gr * si / T for si in s]
            gr = mpmath.mpf(float(g_ce[r]))
            out[("cross_entropy", "backward")] += [
                gr * (si - oi) / T for si, oi in zip(s, onehot, strict=True)]
            out[("cross_entropy_mean", "backward")] += [
                g_mean * (si - oi) / (n_rows * T) for si, oi in zip(s, onehot, strict=True)]
            gr = mpmath.mpf(float(g_soft[r]))
            psum = mpmath.fsum(p)
            out[("soft_cross_entropy", "backward")] += [
                gr * (si * psum - pi) / T for si, pi in zip(s, p, strict=True)]
        ce = out[("cross_entropy", "forward")]
        out[("cross_entropy_mean", "forward")] = [mpmath.fsum(ce) / n_rows]
    shapes = {"softmax": shape, "log_softmax": shape, "logsumexp": shape[:-1], "cross_entropy": shape[:-1],
              "cross_entropy_mean": (), "soft_cross_entropy": shape[:-1]}
    result = {}
    for (op, p), vals in out.items():
        arr = np.empty(len(vals), dtype=object)
        arr[:] = vals
        result[(op, p)] = arr.reshape(shape if p == "backward" else shapes[op])
    return result


def mismatches(value: np.ndarray, exact: np.ndarray, scale: np.ndarray | None = None,
               tol_ulp: float = TOL_ULP64, slack: np.ndarray | None = None) -> list[str]:
    """Elements where the long double is further than tol_ulp float64 ULPs from the exact value.

    The ULP is taken at |exact|, or at max(|exact|, scale) when the element's error scale is
    given. An exact zero (with no scale) must come out as 0, or within 1e-300.
    """
    bad = []
    if scale is not None:
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), exact.shape)
    with mpmath.workdps(DPS):
        for idx in np.ndindex(exact.shape):
            want = exact[idx]
            got = ld_to_mpf(value[idx])
            if not mpmath.isfinite(got):
                bad.append(f"{idx}: got {got}, exact {mpmath.nstr(want, 20)}")
                continue
            diff = abs(got - want)
            mag = np.float64(float(abs(want)))
            if scale is not None:
                mag = np.fmax(mag, scale[idx])
            if want == 0 and mag == 0:
                ok = got == 0 or diff < mpmath.mpf("1e-300")
                ulps = 0.0 if ok else float("inf")
            else:
                ulps = float(diff / mpmath.mpf(float(np.spacing(mag))))
                ok = ulps <= tol_ulp or (slack is not None and diff <= mpmath.mpf(float(slack[idx])))
            if not ok:
                where = " at the scale" if scale is not None else ""
                bad.append(f"{idx}: got {mpmath.nstr(got, 25)}, exact {mpmath.nstr(want, 25)} "
                           f"({ulps:.3g} float64 ULPs{where})")
    return bad


_REFS: dict = {}


def _ref_and_exact(catalog, name: str, dtype: str):
    key = (name, dtype)
    if key not in _REFS:
        case = catalog[name]
        ref = compute_reference(case, dtype)
        _REFS[key] = (case, ref, exact_values(case, ref))
    return _REFS[key]


def test_sample_is_finite_and_small(catalog):
    """The certified sample is what it claims: finite rounded logits, small (<= 16x100)."""
    from suite.dtypes import round_to

    for name, dtype in PARAMS:
        case = catalog[name]
        assert case.logits.size <= 1600, name
        assert np.isfinite(round_to(case.logits, dtype)).all(), (name, dtype)


PARAM_IDS = [f"{n}-{d}" for n, d in PARAMS]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize(("name", "dtype"), PARAMS, ids=PARAM_IDS)
def test_reference_matches_mpmath_at_scale(catalog, name, dtype, op, pass_):
    """Every element within 0.001 float64 ULP of the 50-digit value, the ULP taken at
    max(|exact|, the element's error scale): the accuracy `score` grades with."""
    _, ref, exact = _ref_and_exact(catalog, name, dtype)
    e = ref.expected[(op, pass_)]
    assert e.dtype == dtype
    assert e.value.dtype == LD
    assert e.value.shape == exact[(op, pass_)].shape
    assert np.all(np.isfinite(e.unit)) and np.all(np.asarray(e.unit) > 0)
    slack = _cancel_slack(ref, op, catalog[name].temperature) if pass_ == "backward" else None
    bad = mismatches(e.value, exact[(op, pass_)], scale=_magnitude(e), slack=slack)
    assert not bad, f"{name} {dtype} {op} {pass_}: {len(bad)} of {e.value.size} off:\n" + "\n".join(bad[:8])


def _cancel_slack(ref, op: str, temperature: float) -> np.ndarray | None:
    """2^-60 of the VJP formula's terms, where chance cancellation keeps long double's error."""
    if op not in ("softmax", "log_softmax"):
        return None
    sm = ref.expected[("softmax", "forward")].hi
    g = ref.cotangents[op]
    with np.errstate(invalid="ignore"):
        terms = (sm * (np.abs(g) + np.sum(np.abs(g * sm), axis=-1, keepdims=True)) if op == "softmax"
                 else np.abs(g) + sm * np.sum(np.abs(g), axis=-1, keepdims=True))
    return CANCEL_SLACK * terms / temperature


def _magnitude(e) -> np.ndarray:
    """The magnitude whose ULP in the tested dtype is the graded unit (unit = M * eps)."""
    from suite.dtypes import finfo

    return np.asarray(e.unit, dtype=np.float64) / float(finfo(e.dtype).eps)


TEMPERATURE_PARAMS = [("seed002_T10", "float32"), ("seed002_T0.01", "float64"), ("seed002_T0.1", "float16"),
                      ("normal_scale10_T100", "float32")]


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize(("name", "dtype"), TEMPERATURE_PARAMS, ids=[f"{n}-{d}" for n, d in TEMPERATURE_PARAMS])
def test_temperature_reference_is_exact_z_over_T(catalog, name, dtype, pass_):
    """`temperature` is graded against op(z / T) with the exact quotient (gradients wrt z), not
    against the rounded x the other impls receive."""
    case = catalog[name]
    ref = compute_reference(case, dtype)
    exact = exact_values(case, ref, temperature=True)
    assert ref.expected_temperature is not ref.expected
    for op in OPS:
        # z / T in long double is one more rounding, which exp amplifies by |z / T|: 0.01 float64 ULP of
        # the graded unit (which carries u |z / T| for the impl's own division) instead of 0.001
        e = ref.expected_temperature[(op, pass_)]
        # (and the long double sums over n cotangents add ceil(log2 n) roundings: 16 x the slack)
        slack = 16 * _cancel_slack(ref, op, case.temperature) if pass_ == "backward" and op in (
            "softmax", "log_softmax") else None
        bad = mismatches(e.value, exact[(op, pass_)], scale=_magnitude(e), tol_ulp=TOL_ELEMENT, slack=slack)
        assert not bad, f"{name} {dtype} {op} {pass_}: " + "\n".join(bad[:4])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("name", "dtype"), PARAMS, ids=PARAM_IDS)
def test_forward_reference_elementwise(catalog, name, dtype, op):
    """Forward values keep full relative accuracy element by element, tiny ones included
    (log_softmax at the max, CE of a confident row, subnormal probabilities)."""
    _, ref, exact = _ref_and_exact(catalog, name, dtype)
    e = ref.expected[(op, "forward")]
    bad = mismatches(e.value, exact[(op, "forward")], tol_ulp=TOL_ELEMENT)
    assert not bad, f"{name} {dtype} {op} forward: {len(bad)} of {e.value.size} off:\n" + "\n".join(bad[:8])


@pytest.mark.parametrize(("name", "dtype"), PARAMS, ids=PARAM_IDS)
def test_backward_reference_elementwise(catalog, name, dtype):
    """The same per-element requirement on the gradients, which `max_ulp_err` and `max_rel_err`
    of backward rows are measured against element by element."""
    _, ref, exact = _ref_and_exact(catalog, name, dtype)
    report = []
    for op in OPS:
        e = ref.expected[(op, "backward")]
        slack = _cancel_slack(ref, op, 1.0)
        bad = mismatches(e.value, exact[(op, "backward")], tol_ulp=TOL_ELEMENT, slack=slack)
        if bad:
            report.append(f"{op}: {len(bad)} of {e.value.size} off, e.g. {bad[0]}")
    assert not report, f"{name} {dtype} backward:\n" + "\n".join(report)


def test_ld_to_mpf_is_exact():
    v = LD(1) / LD(3)
    with mpmath.workdps(DPS):
        got = ld_to_mpf(v)
        assert got != mpmath.mpf(float(v))  # keeps the bits beyond float64
        assert abs(got - mpmath.mpf(1) / 3) < mpmath.mpf(2) ** -63
        tiny = LD("1e-4000")
        assert abs(ld_to_mpf(tiny) / mpmath.mpf("1e-4000") - 1) < mpmath.mpf(2) ** -62


# --- special conventions (IEEE answers where the math is undefined) ---------------------------

def _fwd(catalog, name, op, dtype="float64"):
    value = compute_reference(catalog[name], dtype).expected[(op, "forward")].value
    return np.asarray(value, dtype=np.float64)


def test_mask_full_row(catalog):
    sm = _fwd(catalog, "mask_full_row", "softmax")
    lse = _fwd(catalog, "mask_full_row", "logsumexp")
    assert np.isnan(sm[0]).all()
    assert lse[0] == -np.inf
    assert np.isfinite(sm[1]).all() and np.isclose(sm[1].sum(), 1.0)
    assert np.isclose(lse[1], np.log(np.exp([1.0, 2.0, 3.0]).sum()), rtol=1e-15)


def test_posinf_entry(catalog):
    sm = _fwd(catalog, "posinf_entry", "softmax")
    lse = _fwd(catalog, "posinf_entry", "logsumexp")
    assert lse[0] == np.inf
    assert np.isnan(sm[0]).all()
    assert np.isfinite(sm[1]).all()
    assert np.isfinite(lse[1])


def test_nan_entry(catalog):
    for op in OPS:
        v = _fwd(catalog, "nan_entry", op)
        if op == "cross_entropy_mean":
            assert np.isnan(v)
            continue
        assert np.isnan(v[0]).all(), op
        assert np.isfinite(v[1]).all(), op


def test_mask_target_masked(catalog):
    ce = _fwd(catalog, "mask_target_masked", "cross_entropy")
    assert ce.shape == (1,)
    assert ce[0] == np.inf


def test_mask_partial_soft_cross_entropy_finite(catalog):
    case = catalog["mask_partial"]
    soft = _fwd(catalog, "mask_partial", "soft_cross_entropy")
    assert np.isfinite(soft).all()
    # 0 * log 0 = 0: only the classes with p > 0 contribute
    x = case.logits
    for r in range(2):
        live = np.isfinite(x[r])
        lse = np.log(np.exp(x[r][live]).sum())
        p = case.probs[r]
        want = -sum(p[i] * (x[r][i] - lse) for i in range(x.shape[1]) if p[i] != 0)
        assert np.isclose(soft[r], want, rtol=1e-14)
    sm = _fwd(catalog, "mask_partial", "softmax")
    assert (sm[~np.isfinite(x)] == 0).all()


# --- known values from the seeds ---------------------------------------------------------------

def test_seed003_linspace1e5_cross_entropy(catalog):
    ce = _fwd(catalog, "seed003_linspace1e5", "cross_entropy")
    assert np.allclose(ce[:3], [1803.6252505, 1603.22244489, 1402.81963928], rtol=1e-10)


def test_seed004_vec_softmax(catalog):
    sm = _fwd(catalog, "seed004_vec", "softmax")
    assert np.allclose(sm, [0.01165623, 0.03168492, 0.08612854, 0.23412166, 0.63640865], atol=1e-8)


@pytest.mark.parametrize("name", ["seed002_T0.5", "mask_partial", "nan_entry"])
def test_reference_shared_between_workers_is_the_computed_one(catalog, name, tmp_path, monkeypatch):
    """runner.reference: the first task computes and saves a (case, dtype); the others map the saved
    arrays. Every array, bound and table (temperature's own where T != 1) must come back unchanged."""
    from dataclasses import fields

    from suite import runner
    from suite.runner import Plan, reference

    monkeypatch.setattr(runner, "SHARE_MIN_ELEMENTS", 0)  # small cases are shared too (normally computed)

    case = catalog[name]
    plan = Plan(["numpy"], ["cpu"], ["bfloat16"], list(OPS), ["fused"], list(PASSES), cases=[case],
                cache_dir=str(tmp_path))
    computed = reference(plan, case, "bfloat16")
    shared = reference(plan, case, "bfloat16")  # loaded this time
    assert [p.name for p in tmp_path.iterdir()] == ["0-bfloat16"]

    def same(a, b) -> bool:  # values, NaNs and signs of zero (long double's padding bytes are not data)
        a, b = np.asarray(a), np.asarray(b)
        return (a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                and np.array_equal(np.signbit(a), np.signbit(b)))

    for f in ("x", "z", "probs", "softmax_t1"):
        assert same(getattr(computed, f), getattr(shared, f)), f
    inputs = [shared.x, shared.z, shared.probs, *shared.cotangents.values()]  # handed to the frameworks
    assert all(np.asarray(a).flags.writeable for a in inputs)
    assert shared.temperature == computed.temperature
    assert all(same(computed.cotangents[op], shared.cotangents[op]) for op in OPS)
    assert (shared.expected_temperature is shared.expected) == (computed.expected_temperature is computed.expected)
    for impl in ("fused", "temperature"):
        for key, e in computed.for_impl(impl).items():
            got = shared.for_impl(impl)[key]
            assert got.dtype == e.dtype and got.bound == e.bound, key
            assert all(same(getattr(e, f.name), getattr(got, f.name)) for f in fields(e) if f.name in ("value", "unit"))


def test_small_reference_is_kept_for_the_run_in_the_process(catalog, tmp_path):
    """A small case's reference is computed once per process and run: the next framework's task of the same
    (case, dtype) gets the same object (with the scoring views it cached); another run computes afresh."""
    from suite.runner import Plan, reference

    case = catalog["seed000_batch"]

    def plan(run: str) -> Plan:
        (tmp_path / run).mkdir(exist_ok=True)
        return Plan(["numpy"], ["cpu"], ["float16"], list(OPS), ["fused"], list(PASSES), cases=[case],
                    cache_dir=str(tmp_path / run))

    first = reference(plan("a"), case, "float16")
    assert reference(plan("a"), case, "float16") is first
    assert reference(plan("a"), case, "float32") is not first
    other = reference(plan("b"), case, "float16")
    assert other is not first and np.array_equal(other.x, first.x)


def test_small_reference_is_computed_not_shared(catalog, tmp_path):
    """Below SHARE_MIN_ELEMENTS computing costs less than writing and mapping the files: nothing is written."""
    from suite.runner import SHARE_MIN_ELEMENTS, Plan, reference

    case = catalog["seed000_batch"]
    assert case.logits.size <= SHARE_MIN_ELEMENTS
    plan = Plan(["numpy"], ["cpu"], ["float32"], list(OPS), ["fused"], list(PASSES), cases=[case],
                cache_dir=str(tmp_path))
    reference(plan, case, "float32")
    assert list(tmp_path.iterdir()) == []
