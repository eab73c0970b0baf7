"""High-precision references, computed once per (case, dtype) from the logits as rounded to that
dtype, so the reference grades the implementation and not the input rounding.

Arithmetic is x86 extended precision (numpy long double, 64-bit significand: 2^11 times finer than
float64), with the Blanchard-Higham-Higham log1p formulation so that tiny outputs (log_softmax at
the largest logit, CE of a confident row) keep full relative accuracy. tests/test_reference.py
certifies it against mpmath at 50 digits. Where numpy's long double is no wider than float64 the
suite says so in env.json and the fp64 grades lose their margin.

Special values follow Case.convention (IEEE answers where the math is undefined).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cases import Case
from suite.dtypes import round_to, smallest_normal, spacing, unit_roundoff
from suite.formulas import analytic_vjp
from suite.ops import OPS

LD = np.longdouble
EXTENDED = np.finfo(LD).nmant >= 63  # long double wider than float64 on this platform


@dataclass(frozen=True)
class Expected:
    """The exact answer (long double) and, per element, the scale its error is judged at.

    The cached views are what scoring needs, computed once however many implementations are
    scored against this reference: the exact value as a double-double hi + lo (so that errors of
    float64 outputs are measured beyond float64 without long double arithmetic per row; only for
    float64 results in the subnormal range does lo underflow, leaving +-0.5 ULP of slack), the
    value rounded to the output dtype, and ULP sizes at the exact value and at the scale.
    """

    value: np.ndarray
    scale: np.ndarray
    dtype: str

    @cached_property
    def hi(self) -> np.ndarray:
        return self.value.astype(np.float64)

    @cached_property
    def lo(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            lo = (self.value - self.hi.astype(LD)).astype(np.float64)
        return np.where(np.isfinite(lo), lo, 0.0)

    @cached_property
    def want(self) -> np.ndarray:
        """What the dtype can hold: the exact value rounded, inf past the dtype's range."""
        return round_to(self.hi, self.dtype)

    @cached_property
    def ulp_exact(self) -> np.ndarray:
        """ULP of the dtype at |exact| (inf where the exact value is not finite: no error there)."""
        return np.nan_to_num(spacing(self.hi, self.dtype), nan=np.inf)

    @cached_property
    def ulp_scale(self) -> np.ndarray:
        """ULP of the dtype at max(|exact|, scale): the graded unit."""
        with np.errstate(invalid="ignore"):
            scale = np.fmax(np.abs(self.hi), np.broadcast_to(self.scale, self.hi.shape))
        return np.nan_to_num(spacing(scale, self.dtype), nan=np.inf)

    @cached_property
    def rel_denominator(self) -> np.ndarray:
        """|exact|, with inf where it is 0 or not finite (no relative error defined there)."""
        a = np.abs(self.hi)
        return np.where((a > 0) & np.isfinite(a), a, np.inf)

    @cached_property
    def all_finite(self) -> bool:
        return bool(np.isfinite(self.want).all())

    @cached_property
    def tiny(self) -> np.ndarray:
        """Non-zero results below the dtype's smallest normal: where flush-to-zero can bite."""
        return (self.want != 0) & (np.abs(self.want) < smallest_normal(self.dtype))


@dataclass(frozen=True)
class Reference:
    logits: np.ndarray  # z rounded to the dtype (float64 holding exact values)
    probs: np.ndarray  # probability targets rounded to the dtype
    cotangents: dict[str, np.ndarray]  # per op, rounded to the dtype; 1.0 for scalar outputs
    expected: dict[tuple[str, str], Expected]  # (op, pass) -> Expected
    softmax_t1: np.ndarray  # softmax(z) at T = 1, for the temperature distance


def cotangent(case: Case, op: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Fixed, case-seeded cotangent for the VJP of `op`; exactly 1 for scalar outputs."""
    if shape == ():
        return np.array(1.0)
    return round_to(case.rng(f"cotangent:{op}").standard_normal(shape), dtype)


def _softmax_parts(x: np.ndarray) -> dict[str, np.ndarray]:
    """Shifted log1p algorithm in long double on rows without NaN/+inf/all -inf."""
    a = np.max(x, axis=-1, keepdims=True)
    d = x - a
    e = np.exp(d)
    rest = e.copy()
    np.put_along_axis(rest, np.argmax(x, axis=-1)[..., None], 0, axis=-1)
    l1p = np.log1p(np.sum(rest, axis=-1, keepdims=True))
    return {"softmax": e / np.exp(l1p), "log_softmax": d - l1p, "lse": (a + l1p)[..., 0]}


def _special_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nan_row = np.isnan(x).any(axis=-1)
    pinf_row = (x == np.inf).any(axis=-1)
    masked_row = (x == -np.inf).all(axis=-1)
    return nan_row, pinf_row & ~nan_row, masked_row & ~nan_row


def _exact_forward(x: np.ndarray, targets: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    nan_row, pinf_row, masked_row = _special_rows(x)
    special = nan_row | pinf_row | masked_row
    parts = _softmax_parts(np.where(special[..., None], LD(0), x))
    sm, lsm, lse = parts["softmax"], parts["log_softmax"], np.array(parts["lse"])
    with np.errstate(invalid="ignore"):
        ce = np.array(-np.take_along_axis(lsm, targets[..., None], axis=-1)[..., 0])
        soft = np.array(-np.sum(np.where(probs != 0, probs * lsm, LD(0)), axis=-1))
    sm[special] = np.nan
    lsm[special] = np.nan
    lse[nan_row] = np.nan
    lse[pinf_row] = np.inf
    lse[masked_row] = -np.inf
    ce[special] = np.nan
    soft[special] = np.nan
    return {"softmax": sm, "log_softmax": lsm, "logsumexp": lse, "cross_entropy": ce,
            "cross_entropy_mean": np.mean(ce), "soft_cross_entropy": soft, "special": special}


def _scales(x: np.ndarray, fwd: dict, targets: np.ndarray, probs: np.ndarray,
            cot: dict[str, np.ndarray], T: float, dtype: str) -> dict[tuple[str, str], np.ndarray]:
    """Error scales from conditioning: a relative change u in every input moves op_i by about
    u * scale_i, so an error is judged in ULPs of max(|exact_i|, scale_i) (README: Grading)."""
    s = np.asarray(fwd["softmax"], dtype=np.float64)
    xa = np.abs(np.asarray(x, dtype=np.float64))
    u = unit_roundoff(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        sx = np.where(s > 0, s * xa, 0.0)  # masked entries weigh nothing
        A = np.sum(sx, axis=-1, keepdims=True)  # sum_j s_j |x_j|
        # exp turns an input error of u|x| into a factor exp(u|x|): first order only while u|x| << 1
        # (z / T = 3150 in bfloat16 is 3152), so the softmax terms use expm1(u c) / u, not c
        growth = np.where(s > 0, np.expm1(np.minimum(u * (xa + A + 1), 700.0)) / u, 0.0)
        x_t = np.take_along_axis(xa, targets[..., None], axis=-1)
        psum = np.sum(probs, axis=-1, keepdims=True)
        fw = {
            "softmax": s * growth,
            "log_softmax": xa + A + 1,
            "logsumexp": (A + 1)[..., 0],
            "cross_entropy": (x_t + A + 1)[..., 0],
            "soft_cross_entropy": (np.sum(np.where(probs > 0, probs * xa, 0.0), axis=-1, keepdims=True)
                                   + (A + 1) * psum)[..., 0],
        }
        fw["cross_entropy_mean"] = np.asarray(np.mean(fw["cross_entropy"]))
        smax = np.max(s, axis=-1, keepdims=True)
        pmax = np.max(probs, axis=-1, keepdims=True)
        # largest term each VJP formula (analytic_vjp) adds or subtracts, per unit of max|g|;
        # log_softmax's g_i - s_i sum(g) carries the error of a sum over n cotangents of both signs
        gl = np.abs(cot["log_softmax"])
        lsm_terms = np.maximum(1.0, smax * np.sum(gl, axis=-1, keepdims=True)
                               / np.maximum(np.max(gl, axis=-1, keepdims=True), np.finfo(float).tiny))
        cancel = {
            "softmax": smax, "log_softmax": lsm_terms, "logsumexp": smax,
            "cross_entropy": np.ones_like(smax), "cross_entropy_mean": np.ones_like(smax),
            "soft_cross_entropy": np.maximum(smax * psum, pmax),
        }
        out = {(op, "forward"): fw[op] for op in OPS}
        for op in OPS:
            g = np.abs(cot[op])
            gmax = np.max(g, axis=-1, keepdims=True) if op in ("softmax", "log_softmax") else (
                g[..., None] if g.ndim else g / max(int(np.prod(s.shape[:-1])), 1))
            out[(op, "backward")] = gmax / T * (cancel[op] * (1 + 2 * A) + s * growth)
    return out


def exact_vjp(op: str, s: np.ndarray, targets: np.ndarray, probs: np.ndarray, g: np.ndarray,
              temperature: float) -> np.ndarray:
    """analytic_vjp without its cancellation: where the formula subtracts nearly equal terms (at the
    row's dominant class k, or the CE target t) the entry is rewritten through rest_i = sum_{j!=i} s_j,
    which is a sum of small positive terms and keeps full relative accuracy:
    softmax: s_k * sum_{j!=k} s_j (g_k - g_j); log_softmax: rest_k * sum(g) - sum_{j!=k} g_j;
    CE: -rest_t; soft CE: sum_{j!=k} p_j - sum(p) * rest_k.
    Chance near-equalities elsewhere (g_i ~ sum_j g_j s_j) keep long double's 2^-64 times the
    cancellation: the README states that bound for backward references."""
    out = analytic_vjp(op, s, targets, probs, g, temperature)
    if op == "logsumexp" or out.ndim == 0:
        return out
    T = LD(temperature)

    def at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, idx[..., None], axis=-1)

    def rest(a: np.ndarray, idx: np.ndarray) -> np.ndarray:  # sum over j != idx
        b = a.copy()
        np.put_along_axis(b, idx[..., None], 0, axis=-1)
        return np.sum(b, axis=-1, keepdims=True)

    with np.errstate(invalid="ignore", over="ignore"):
        if op in ("cross_entropy", "cross_entropy_mean"):
            idx = targets
            gg = g[..., None] if op == "cross_entropy" else g / max(int(np.prod(s.shape[:-1])), 1)
            val = -gg * rest(s, idx)
        else:
            idx = np.argmax(np.where(np.isnan(s), -1, s), axis=-1)
            if op == "softmax":
                val = at(s, idx) * np.sum(np.where(s > 0, s * (at(g, idx) - g), 0), axis=-1, keepdims=True)
            elif op == "log_softmax":
                val = rest(s, idx) * np.sum(g, axis=-1, keepdims=True) - rest(g, idx)
            else:  # soft_cross_entropy
                val = g[..., None] * (rest(probs, idx) - np.sum(probs, axis=-1, keepdims=True) * rest(s, idx))
        keep = np.isfinite(at(out, idx))  # special rows keep their NaN
        np.put_along_axis(out, idx[..., None], np.where(keep, val / T, at(out, idx)), axis=-1)
    return out


def compute_reference(case: Case, dtype: str) -> Reference:
    z = round_to(case.logits, dtype)
    probs = round_to(case.probs, dtype)
    T = float(case.temperature)
    x = z.astype(LD) / LD(T)
    p_ld = probs.astype(LD)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        fwd = _exact_forward(x, case.targets, p_ld)
        out_shapes = {op: np.shape(fwd[op]) for op in OPS}
        cot = {op: cotangent(case, op, out_shapes[op], dtype) for op in OPS}
        expected: dict[tuple[str, str], Expected] = {}
        scales = _scales(x, fwd, case.targets, probs, cot, T, dtype)
        s_grad = np.where(fwd["special"][..., None], LD(np.nan), fwd["softmax"])
        for op in OPS:
            expected[(op, "forward")] = Expected(np.asarray(fwd[op]), np.asarray(scales[(op, "forward")]), dtype)
            grad = exact_vjp(op, s_grad, case.targets, p_ld, cot[op].astype(LD), T)
            expected[(op, "backward")] = Expected(grad, np.broadcast_to(scales[(op, "backward")], grad.shape), dtype)
        if T == 1.0:
            sm1 = fwd["softmax"]
        else:
            sm1 = _exact_forward(z.astype(LD), case.targets, p_ld)["softmax"]
    return Reference(logits=z, probs=probs, cotangents=cot, expected=expected,
                     softmax_t1=np.asarray(sm1, dtype=np.float64))
