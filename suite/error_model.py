"""The error model every result is graded with: what the computation an implementation must do *on the
input it was given* can cost, derived from the Blanchard-Higham-Higham analysis of the shifted
algorithms (docs/grading.md, where the derivation is written out).

An element is `ok` when |computed - exact| <= B * unit, with B = `ulp_bound` ULPs of the tested dtype and

    unit_i = ulp(|exact_i|) + u * (B * rho_i + 2 * kappa_i) / B

* ulp(|exact_i|): the rounding steps (subtraction, exp, log, division, output) and ceil(log2 n) levels of
  pairwise summation, all relative to the element's own value, are what B ULPs of it pay for;
* rho_i: where an error relative to an *internal* quantity lands on a smaller result, in absolute
  terms (log S for S = sum exp(x_j - m) >= 1: log_softmax, logsumexp and CE have an absolute error
  floor of a few u; a VJP carries the sums sum_j g_j s_j and sum_j g_j);
* kappa_i: the first-order effect of rounding the distances to the row max, d_i = m - x_i >= 0, that
  exp amplifies: s_i (d_i + D) for softmax with D = sum_j s_j d_j, with the BHH coefficient 1, charged
  twice. softmax, log_softmax, CE and soft CE are shift-invariant, so only distances appear, never
  |x_i|: adding a constant to a row changes neither the error allowed nor the error made. logsumexp
  is shift-equivariant, lse(x + c) = lse(x) + c; its final addition's rounding u |lse| is the ulp term.

`temperature` divides z by T itself, so each of its inputs carries one more rounding, u |x_i|: its
distances become d_i + |x_i| and D + A with A = sum_j s_j |x_j| (exp of a perturbed input grows as
expm1, not linearly: z / T = 3150 in bfloat16 is 3152).
"""

from __future__ import annotations

import math

import numpy as np

from suite.dtypes import spacing, unit_roundoff
from suite.ops import OPS

DISTANCE_WEIGHT = 2.0  # kappa's coefficient: BHH's first-order 1, with room for second-order terms


def levels(n: int) -> int:
    """ceil(log2 n) levels of pairwise summation; a single class is counted as two (docs/grading.md)."""
    return math.ceil(math.log2(max(n, 2)))


def ulp_bound(op: str, pass_: str, n_classes: int) -> float:
    """B, the largest `ulp_err_scaled` graded `ok`, in ULPs of the tested dtype.

    Forward: 4 ULPs for the handful of correctly rounded steps (exp, log/log1p, division, final
    subtraction, output rounding) plus 2 per level of pairwise summation over n classes (Higham's
    ceil(log2 n) u bound on a pairwise sum reaches every output). Backward chains a second
    reduction and the VJP's subtraction: twice that.
    """
    base = 4 + 2 * levels(n_classes)
    return float(base if pass_ == "forward" else 2 * base)


def _grow(u: float, dist: np.ndarray) -> np.ndarray:
    """(exp(u dist) - 1) / u: how an input error of u * dist moves exp, past first order too."""
    return np.expm1(np.minimum(u * dist, 700.0)) / u


def units(x: np.ndarray, s: np.ndarray, targets: np.ndarray, probs: np.ndarray,
          cotangents: dict[str, np.ndarray], exact: dict[str, np.ndarray], dtype: str,
          grad_scale: float = 1.0, division: bool = False) -> dict[tuple[str, str], np.ndarray]:
    """(op, pass) -> the graded unit per element (module docstring), for op(x) with softmax s.

    `x` is the exact input of the op (special rows already replaced by finite values), `exact` the
    exact forward and backward values per (op, pass) as float64, `grad_scale` the factor of the
    gradient wrt the impl's input (1 / T for `temperature`, whose gradient is wrt z), `division`
    whether the implementation rounds x_i itself (temperature at T != 1)."""
    u = unit_roundoff(dtype)
    n = x.shape[-1]
    rows = max(int(np.prod(x.shape[:-1])), 1)
    with np.errstate(invalid="ignore", over="ignore"):
        live = s > 0  # masked (-inf) entries weigh nothing
        m = np.max(np.where(live, x, -np.inf), axis=-1, keepdims=True)
        dist = np.where(live, m - x, 0.0)
        if division:
            dist = dist + np.where(live, np.abs(x), 0.0)
        Dist = np.sum(s * dist, axis=-1, keepdims=True)
        grow = np.where(live, _grow(u, dist + Dist), 0.0)  # dist_i + Dist, as exp feels it
        t = targets[..., None]
        psum = np.sum(probs, axis=-1, keepdims=True)
        onehot = np.zeros_like(s)
        np.put_along_axis(onehot, t, 1.0, axis=-1)
        dist_t = np.take_along_axis(dist, t, axis=-1)
        # (rho, kappa) per op and pass, in value units (multiples of u)
        ce_k = (dist_t + Dist)[..., 0]
        model = {
            ("softmax", "forward"): (0.0, s * grow),
            ("log_softmax", "forward"): (1.0, dist + Dist),
            ("logsumexp", "forward"): (1.0, Dist[..., 0]),
            ("cross_entropy", "forward"): (1.0, ce_k),
            ("cross_entropy_mean", "forward"): (
                1.0, np.mean(ce_k) + levels(rows) * np.abs(exact[("cross_entropy_mean", "forward")]) / 2),
            ("soft_cross_entropy", "forward"): (
                psum[..., 0], np.sum(np.where(probs != 0, probs * dist, 0.0), axis=-1) + (Dist * psum)[..., 0]),
        }
        g = {op: np.abs(np.asarray(cotangents[op], dtype=np.float64)) for op in OPS}
        g_sm = g["softmax"]
        g1 = np.sum(s * g_sm, axis=-1, keepdims=True)
        model[("softmax", "backward")] = (s * (g_sm + g1),
                                          s * ((g_sm + g1) * grow + np.sum(g_sm * s * grow, axis=-1, keepdims=True)))
        g_l = np.asarray(cotangents["log_softmax"], dtype=np.float64)
        model[("log_softmax", "backward")] = (s * np.sum(np.abs(g_l), axis=-1, keepdims=True),
                                              s * np.abs(np.sum(g_l, axis=-1, keepdims=True)) * grow)
        g_lse = g["logsumexp"][..., None]
        model[("logsumexp", "backward")] = (0.0, g_lse * s * grow)
        g_ce = g["cross_entropy"][..., None]
        model[("cross_entropy", "backward")] = (g_ce * (s + onehot), g_ce * s * grow)
        g_mean = g["cross_entropy_mean"] / rows
        model[("cross_entropy_mean", "backward")] = (g_mean * (s + onehot), g_mean * s * grow)
        g_soft = g["soft_cross_entropy"][..., None]
        model[("soft_cross_entropy", "backward")] = (g_soft * (s * psum + probs), g_soft * s * psum * grow)
        out = {}
        for (op, pass_), (rho, kappa) in model.items():
            B = ulp_bound(op, pass_, n)
            scale = grad_scale if pass_ == "backward" else 1.0
            extra = scale * (B * np.asarray(rho) + DISTANCE_WEIGHT * np.asarray(kappa))
            value = exact[(op, pass_)]
            unit = spacing(value, dtype) + u * np.broadcast_to(extra, np.shape(value)) / B
            out[(op, pass_)] = np.where(np.isfinite(unit), unit, np.inf)
    return out
