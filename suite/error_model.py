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


def row_terms(x: np.ndarray, s: np.ndarray, targets: np.ndarray, probs: np.ndarray, dtype: str,
              division: bool = False) -> dict[str, np.ndarray]:
    """The terms every (op, pass) of `units` shares, per element or row (module docstring): the distances
    d_i to the row max, D = sum_j s_j d_j, exp's growth, the target's one-hot and CE's kappa `ce_k`."""
    u = unit_roundoff(dtype)
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
        ce_k = (dist_t + Dist)[..., 0]
    return {"dist": dist, "Dist": Dist, "grow": grow, "psum": psum, "onehot": onehot, "ce_k": ce_k}


def units(x: np.ndarray, s: np.ndarray, targets: np.ndarray, probs: np.ndarray,
          cotangents: dict[str, np.ndarray], exact: dict[tuple[str, str], np.ndarray], dtype: str,
          grad_scale: float = 1.0, division: bool = False, keys: list[tuple[str, str]] | None = None,
          rows: int | None = None, ce_k_mean: float | None = None,
          terms: dict[str, np.ndarray] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """(op, pass) -> the graded unit per element (module docstring), for op(x) with softmax s.

    `x` is the exact input of the op (special rows already replaced by finite values), `exact` the
    exact forward and backward values per (op, pass) as float64, `grad_scale` the factor of the
    gradient wrt the impl's input (1 / T for `temperature`, whose gradient is wrt z), `division`
    whether the implementation rounds x_i itself (temperature at T != 1). `keys` (default: all) are
    the (op, pass) to compute; when `x` is a block of a case's rows, `rows` is the case's row count and
    `ce_k_mean` the mean of row_terms' ce_k over all of them (cross_entropy_mean's forward needs both);
    `terms`: row_terms of these arguments, if the caller has them."""
    u = unit_roundoff(dtype)
    n = x.shape[-1]
    rows = max(int(np.prod(x.shape[:-1])), 1) if rows is None else max(rows, 1)
    keys = [(op, p) for op in OPS for p in ("forward", "backward")] if keys is None else keys
    r = row_terms(x, s, targets, probs, dtype, division) if terms is None else terms
    dist, Dist, grow, psum, onehot, ce_k = (r[k] for k in ("dist", "Dist", "grow", "psum", "onehot", "ce_k"))
    with np.errstate(invalid="ignore", over="ignore"):
        g = {op: np.abs(np.asarray(cotangents[op], dtype=np.float64)) for op in {k[0] for k in keys}}

        def model(op: str, pass_: str) -> tuple:
            """(rho, kappa) of one (op, pass), in value units (multiples of u)."""
            if pass_ == "forward":
                if op == "softmax":
                    return 0.0, s * grow
                if op == "log_softmax":
                    return 1.0, dist + Dist
                if op == "logsumexp":
                    return 1.0, Dist[..., 0]
                if op == "cross_entropy":
                    return 1.0, ce_k
                if op == "cross_entropy_mean":
                    mean = np.mean(ce_k) if ce_k_mean is None else ce_k_mean
                    return 1.0, mean + levels(rows) * np.abs(exact[("cross_entropy_mean", "forward")]) / 2
                return (psum[..., 0],
                        np.sum(np.where(probs != 0, probs * dist, 0.0), axis=-1) + (Dist * psum)[..., 0])
            if op == "softmax":
                g_sm = g["softmax"]
                g1 = np.sum(s * g_sm, axis=-1, keepdims=True)
                return s * (g_sm + g1), s * ((g_sm + g1) * grow + np.sum(g_sm * s * grow, axis=-1, keepdims=True))
            if op == "log_softmax":
                g_l = np.asarray(cotangents["log_softmax"], dtype=np.float64)
                return (s * np.sum(np.abs(g_l), axis=-1, keepdims=True),
                        s * np.abs(np.sum(g_l, axis=-1, keepdims=True)) * grow)
            if op == "logsumexp":
                return 0.0, g["logsumexp"][..., None] * s * grow
            if op == "cross_entropy":
                g_ce = g["cross_entropy"][..., None]
                return g_ce * (s + onehot), g_ce * s * grow
            if op == "cross_entropy_mean":
                g_mean = g["cross_entropy_mean"] / rows
                return g_mean * (s + onehot), g_mean * s * grow
            g_soft = g["soft_cross_entropy"][..., None]
            return g_soft * (s * psum + probs), g_soft * s * psum * grow

        out = {}
        for op, pass_ in keys:
            rho, kappa = model(op, pass_)
            B = ulp_bound(op, pass_, n)
            scale = grad_scale if pass_ == "backward" else 1.0
            extra = scale * (B * np.asarray(rho) + DISTANCE_WEIGHT * np.asarray(kappa))
            value = exact[(op, pass_)]
            unit = spacing(value, dtype) + u * np.broadcast_to(extra, np.shape(value)) / B
            out[(op, pass_)] = np.where(np.isfinite(unit), unit, np.inf)
    return out
