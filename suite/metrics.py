"""Scoring one output against its reference: errors, ULPs, non-finite counts, verdict.

Two ULP figures are reported. `max_ulp_err` is the plain per-element error in ULPs of the output
dtype at the exact value. `ulp_err_scaled` is the graded one: the error in the graded unit of
suite.error_model (the ULP at |exact| plus the share of what the computation on the given input must
cost), so that a tiny exact output (log_softmax at the largest logit, a subnormal probability) is not
judged per element where no algorithm can do better. Subnormal results flushed to zero are counted in
`n_flushed` and left out of both ULP figures rather than hidden or punished.

Two kinds of special-value failure are told apart: `nonfinite` (NaN/inf where the exact answer is
finite: the NaN loss of the seeds) and `wrong_special` (where the exact answer is itself NaN or +-inf,
a result other than that one, e.g. NaN for an exact +inf logsumexp).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from suite.error_model import ulp_bound
from suite.reference import Expected

__all__ = ["score", "tv_distance", "ulp_bound"]


def _max(a: np.ndarray) -> float:
    return float(np.max(a)) if a.size else 0.0


def score(got: np.ndarray, expected: Expected, op: str, pass_: str) -> dict:
    """Metrics and verdict for one (implementation, case) output, already float64 and rounded to
    the tested dtype."""
    e = expected
    if got.shape != e.hi.shape:
        return {"verdict": "error", "message": f"output shape {got.shape}, expected {e.hi.shape}"}
    want = e.want
    fin_g = np.isfinite(got)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((got - e.hi) - e.lo)  # double-double difference: beyond float64 precision
    if e.all_finite and fin_g.all() and not e.tiny.any():  # the common case: nothing to mask
        bad_nonfinite = bad_special = flushed = np.zeros(got.shape, dtype=bool)
    else:
        fin_w = np.isfinite(want)
        same_special = (np.isnan(want) & np.isnan(got)) | (~fin_w & (got == want))
        bad_nonfinite = fin_w & ~fin_g
        bad_special = ~fin_w & ~same_special
        both = fin_w & fin_g
        flushed = both & (got == 0) & e.tiny
        err = np.where(both & ~flushed, err, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics = {
            "max_abs_err": _max(err),
            "max_rel_err": _max(err / e.rel_denominator),
            "max_ulp_err": _max(err / e.ulp_exact),
            "ulp_err_scaled": _max(err / e.graded_unit),
        }
    bound = e.bound
    n_nan = int(np.sum(bad_nonfinite & np.isnan(got)))
    n_inf = int(np.sum(bad_nonfinite)) - n_nan
    n_bad, n_special = int(np.sum(bad_nonfinite)), int(np.sum(bad_special))
    metrics.update(n_nonfinite=n_bad, n_wrong_special=n_special, n_flushed=int(np.sum(flushed)),
                   n_elements=int(got.size), ulp_bound=bound)
    if op == "softmax" and pass_ == "forward" and got.ndim:
        rows = np.all(np.isfinite(want), axis=-1)
        with np.errstate(invalid="ignore", over="ignore"):
            metrics["row_sum_dev"] = _max(np.abs(np.sum(got[rows], axis=-1) - 1.0)) if rows.any() else np.nan
    special = (f"{n_special} differ from the exact special value (NaN/inf): "
               f"{_specials(got[bad_special], want[bad_special])}") if n_special else ""
    if n_bad:
        parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else ""]
        msg = " + ".join(p for p in parts if p) + " where the exact value is finite"
        return {**metrics, "verdict": "nonfinite", "message": msg + (f"; {special}" if special else "")}
    if n_special:
        return {**metrics, "verdict": "wrong_special", "message": special}
    if metrics["ulp_err_scaled"] > bound:
        return {**metrics, "verdict": "inaccurate",
                "message": f"{metrics['ulp_err_scaled']:.3g} scaled ULPs > bound {bound:g}"}
    note = f"{metrics['n_flushed']} subnormal results flushed to zero" if metrics["n_flushed"] else ""
    return {**metrics, "verdict": "ok", "message": note}


def _specials(got: np.ndarray, want: np.ndarray) -> str:
    """'NaN for +inf (4), 0.5 for NaN (1)': what came back where the exact value is special."""
    def name(v: float) -> str:
        return "NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf") if np.isinf(v) else "finite"

    pairs = pd.Series([f"{name(g)} for {name(w)}" for g, w in zip(got.ravel(), want.ravel(), strict=True)])
    return ", ".join(f"{k} ({v})" for k, v in pairs.value_counts().items())


def tv_distance(got: np.ndarray, softmax_t1: np.ndarray) -> float:
    """Largest total-variation distance between a row of softmax(z/T) and the exact softmax(z)."""
    with np.errstate(invalid="ignore"):
        tv = 0.5 * np.sum(np.abs(got - softmax_t1), axis=-1)
    return float(np.nanmax(tv)) if np.any(np.isfinite(tv)) else float("nan")
