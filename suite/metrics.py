"""Scoring one output against its reference: errors, ULPs, non-finite counts, verdict.

Two ULP figures are reported. `max_ulp_err` is the plain per-element error in ULPs of the output
dtype at the exact value. `ulp_err_scaled` is the graded one: the error in ULPs of the dtype at
max(|exact|, scale), where the scale comes from the op's conditioning (suite.reference._scales), so
that a tiny exact output (log_softmax at the largest logit, a subnormal probability) is not judged
per element when no algorithm can do better than the row's scale allows. Subnormal results flushed
to zero are counted in `n_flushed` and left out of both ULP figures rather than hidden or punished.
"""

from __future__ import annotations

import math

import numpy as np

from suite.reference import Expected


def ulp_bound(op: str, pass_: str, n_classes: int) -> float:
    """Largest `ulp_err_scaled` graded `ok` (README: Grading).

    Forward: 4 ULPs for the handful of correctly rounded steps (exp, log/log1p, division, final
    subtraction, output rounding) plus 2 per level of pairwise summation over n classes (Higham's
    ceil(log2 n) u bound on a pairwise sum, which reaches every output). Backward chains a second
    reduction and the VJP's subtraction: twice that.
    """
    levels = math.ceil(math.log2(max(n_classes, 2)))
    base = 4 + 2 * levels
    return float(base if pass_ == "forward" else 2 * base)


def _max(a: np.ndarray) -> float:
    return float(np.max(a)) if a.size else 0.0


def score(got: np.ndarray, expected: Expected, dtype: str, op: str, pass_: str,
          n_classes: int) -> dict:
    """Metrics and verdict for one (implementation, case) output, already float64."""
    e = expected
    if got.shape != e.hi.shape:
        return {"verdict": "error", "message": f"output shape {got.shape}, expected {e.hi.shape}"}
    want = e.want
    fin_g = np.isfinite(got)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((got - e.hi) - e.lo)  # double-double difference: beyond float64 precision
    if e.all_finite and fin_g.all() and not e.tiny.any():  # the common case: nothing to mask
        bad_nonfinite = bad_finite = flushed = np.zeros(got.shape, dtype=bool)
    else:
        fin_w = np.isfinite(want)
        same_special = (np.isnan(want) & np.isnan(got)) | (~fin_w & (got == want))
        bad_nonfinite = fin_w & ~fin_g
        bad_finite = ~fin_w & ~same_special
        both = fin_w & fin_g
        flushed = both & (got == 0) & e.tiny
        err = np.where(both & ~flushed, err, 0.0)
    metrics = {
        "max_abs_err": _max(err),
        "max_rel_err": _max(err / e.rel_denominator),
        "max_ulp_err": _max(err / e.ulp_exact),
        "ulp_err_scaled": _max(err / e.ulp_scale),
    }
    bound = ulp_bound(op, pass_, n_classes)
    n_nan = int(np.sum(bad_nonfinite & np.isnan(got)))
    n_inf = int(np.sum(bad_nonfinite)) - n_nan
    n_bad = int(np.sum(bad_nonfinite) + np.sum(bad_finite))
    metrics.update(n_nonfinite=n_bad, n_flushed=int(np.sum(flushed)), n_elements=int(got.size),
                   ulp_bound=bound)
    if op == "softmax" and pass_ == "forward" and got.ndim:
        rows = np.all(np.isfinite(want), axis=-1)
        with np.errstate(invalid="ignore", over="ignore"):
            metrics["row_sum_dev"] = _max(np.abs(np.sum(got[rows], axis=-1) - 1.0)) if rows.any() else np.nan
    if n_bad:
        parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else ""]
        msg = " + ".join(p for p in parts if p)
        msg = f"{msg} where the exact value is finite" if msg else ""
        k = int(np.sum(bad_finite))
        if k:
            msg = (msg + "; " if msg else "") + f"{k} differ from the exact special value (NaN/inf)"
        return {**metrics, "verdict": "nonfinite", "message": msg}
    if metrics["ulp_err_scaled"] > bound:
        return {**metrics, "verdict": "inaccurate",
                "message": f"{metrics['ulp_err_scaled']:.3g} scaled ULPs > bound {bound:g}"}
    note = f"{metrics['n_flushed']} subnormal results flushed to zero" if metrics["n_flushed"] else ""
    return {**metrics, "verdict": "ok", "message": note}


def tv_distance(got: np.ndarray, softmax_t1: np.ndarray) -> float:
    """Largest total-variation distance between a row of softmax(z/T) and the exact softmax(z)."""
    with np.errstate(invalid="ignore"):
        tv = 0.5 * np.sum(np.abs(got - softmax_t1), axis=-1)
    return float(np.nanmax(tv)) if np.any(np.isfinite(tv)) else float("nan")
