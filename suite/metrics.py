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

A wide output is scored in blocks of rows (suite.reference.blocks), its figures combined exactly (maxima
and counts), so that scoring needs memory for one block's temporaries, not the output's (docs/memory.md).
"""


from __future__ import annotations

import numpy as np

from suite.error_model import ulp_bound
from suite.reference import Expected, blocks, full_shaped

__all__ = ["score", "tv_distance", "ulp_bound"]

SPECIAL_NAMES = ("NaN", "+inf", "-inf", "finite")


def _max(a) -> float:
    a = np.asarray(a)
    return float(np.max(a)) if a.size else 0.0


def _special_code(v: np.ndarray) -> np.ndarray:
    """Index into SPECIAL_NAMES per element."""
    return np.where(np.isnan(v), 0, np.where(np.isinf(v), np.where(v > 0, 1, 2), 3)).astype(np.int8)


def _block(got: np.ndarray, e: Expected, row_sums: bool) -> dict:
    """One block's maxima, counts and special-value codes (see score)."""
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
        out = {
            "max_abs_err": _max(err),
            "max_rel_err": _max(err / e.rel_denominator),
            "max_ulp_err": _max(err / e.ulp_exact),
            "ulp_err_scaled": _max(err / e.graded_unit),
        }
    n_bad = int(np.sum(bad_nonfinite))
    out.update(n_nan=int(np.sum(bad_nonfinite & np.isnan(got))), n_bad=n_bad, n_special=int(np.sum(bad_special)),
               n_flushed=int(np.sum(flushed)),
               specials=4 * _special_code(got[bad_special]) + _special_code(want[bad_special]))
    if row_sums:
        rows = np.all(np.isfinite(want), axis=-1)
        with np.errstate(invalid="ignore", over="ignore"):
            out["row_sum_dev"] = _max(np.abs(np.sum(got[rows], axis=-1) - 1.0)) if rows.any() else None
    return out


def score(got: np.ndarray, expected: Expected, op: str, pass_: str) -> dict:
    """Metrics and verdict for one (implementation, case) output, already float64 and rounded to
    the tested dtype."""
    e = expected
    if got.shape != e.shape:
        return {"verdict": "error", "message": f"output shape {got.shape}, expected {e.shape}"}
    full = full_shaped(op, pass_)
    row_sums = op == "softmax" and pass_ == "forward" and got.ndim > 0
    parts = [_block(g, b, row_sums) for g, b in zip(blocks(got, full), e.blocks(full), strict=True)]
    metrics = {k: _max([p[k] for p in parts]) for k in ("max_abs_err", "max_rel_err", "max_ulp_err", "ulp_err_scaled")}
    bound = e.bound
    n_nan = sum(p["n_nan"] for p in parts)
    n_bad, n_special = sum(p["n_bad"] for p in parts), sum(p["n_special"] for p in parts)
    n_inf = n_bad - n_nan
    metrics.update(n_nonfinite=n_bad, n_wrong_special=n_special, n_flushed=sum(p["n_flushed"] for p in parts),
                   n_elements=int(got.size), ulp_bound=bound)
    if row_sums:
        devs = [p["row_sum_dev"] for p in parts if p["row_sum_dev"] is not None]
        metrics["row_sum_dev"] = _max(devs) if devs else np.nan
    special = (f"{n_special} differ from the exact special value (NaN/inf): "
               f"{_specials(np.concatenate([p['specials'] for p in parts]))}") if n_special else ""
    if n_bad:
        parts_ = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else ""]
        msg = " + ".join(p for p in parts_ if p) + " where the exact value is finite"
        return {**metrics, "verdict": "nonfinite", "message": msg + (f"; {special}" if special else "")}
    if n_special:
        return {**metrics, "verdict": "wrong_special", "message": special}
    if metrics["ulp_err_scaled"] > bound:
        return {**metrics, "verdict": "inaccurate",
                "message": f"{metrics['ulp_err_scaled']:.3g} scaled ULPs > bound {bound:g}"}
    note = f"{metrics['n_flushed']} subnormal results flushed to zero" if metrics["n_flushed"] else ""
    return {**metrics, "verdict": "ok", "message": note}


def _specials(codes: np.ndarray) -> str:
    """'NaN for +inf (4), 0.5 for NaN (1)': what came back where the exact value is special, from codes
    4 * got + want (SPECIAL_NAMES), most frequent first, ties in order of first appearance."""
    kinds, first, counts = np.unique(codes, return_index=True, return_counts=True)
    order = sorted(range(len(kinds)), key=lambda i: (-counts[i], first[i]))
    return ", ".join(f"{SPECIAL_NAMES[kinds[i] // 4]} for {SPECIAL_NAMES[kinds[i] % 4]} ({counts[i]})" for i in order)


def tv_distance(got: np.ndarray, softmax_t1: np.ndarray) -> float:
    """Largest total-variation distance between a row of softmax(z/T) and the exact softmax(z)."""
    tv = []
    for g, s in zip(blocks(got, True), blocks(softmax_t1, True), strict=True):
        with np.errstate(invalid="ignore"):
            tv.append(np.ravel(0.5 * np.sum(np.abs(g - s), axis=-1)))
    tv = np.concatenate(tv)
    return float(np.nanmax(tv)) if np.any(np.isfinite(tv)) else float("nan")
