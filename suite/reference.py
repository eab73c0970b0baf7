"""High-precision references, computed once per (case, dtype) from the very bits every implementation
receives (x = z / T correctly rounded to the dtype), so the reference grades the implementation and not
the input rounding.

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
from pathlib import Path

import numpy as np

from cases import Case
from suite.dtypes import divide_rounded, round_to, smallest_normal, spacing
from suite.error_model import ulp_bound, units
from suite.formulas import analytic_vjp
from suite.ops import OPS, PASSES, ROW_OPS

LD = np.longdouble
EXTENDED = np.finfo(LD).nmant >= 63  # long double wider than float64 on this platform


@dataclass(frozen=True)
class Expected:
    """The exact answer (long double) and, per element, the unit its error is graded in.

    `unit` is what one graded ULP is worth at each element: the ULP of the dtype at |exact| plus the
    share of the error model's input-driven terms (suite.reference._units, docs/grading.md) that one
    of the `bound` ULPs must carry. The cached views are what scoring needs, computed once however many
    implementations are scored against this reference: the exact value as a double-double hi + lo (so
    that errors of float64 outputs are measured beyond float64; only for float64 results in the
    subnormal range does lo underflow, leaving +-0.5 ULP of slack), the value rounded to the output
    dtype, and the ULP size at the exact value.
    """

    value: np.ndarray
    unit: np.ndarray
    dtype: str
    bound: float

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
        """What the dtype can hold: the exact value correctly rounded, inf past the dtype's range."""
        return round_to(self.value, self.dtype)

    @cached_property
    def ulp_exact(self) -> np.ndarray:
        """ULP of the dtype at |exact| (inf where the exact value is not finite: no error there)."""
        return np.nan_to_num(spacing(self.hi, self.dtype), nan=np.inf)

    @cached_property
    def graded_unit(self) -> np.ndarray:
        """The unit of `ulp_err_scaled` (inf where the exact value is not finite)."""
        with np.errstate(invalid="ignore"):
            unit = np.broadcast_to(self.unit, self.hi.shape)
        return np.where(np.isfinite(self.hi) & np.isfinite(unit), unit, np.inf)

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
    """Everything one (case, dtype) is graded with. `x` is the input every implementation receives:
    z / T correctly rounded to the dtype by the suite, once, the same bits for every framework;
    `expected` is exact on those bits. `temperature` receives `z` and divides by T itself, so it is
    graded against the exact z / T (`expected_temperature`; the same dict when T = 1)."""

    x: np.ndarray  # z / T correctly rounded to the dtype (float64 holding exact dtype values)
    z: np.ndarray  # the logits rounded to the dtype
    temperature: float
    probs: np.ndarray  # probability targets rounded to the dtype
    cotangents: dict[str, np.ndarray]  # per op, rounded to the dtype; 1.0 for scalar outputs
    expected: dict[tuple[str, str], Expected]  # (op, pass) -> Expected, of op(x), gradients wrt x
    expected_temperature: dict[tuple[str, str], Expected]  # of op(z / T) exactly, gradients wrt z
    softmax_t1: np.ndarray  # softmax(z) at T = 1, for the temperature distance

    def for_impl(self, impl: str) -> dict[tuple[str, str], Expected]:
        return self.expected_temperature if impl == "temperature" else self.expected

    def save(self, path: Path) -> None:
        """As a directory of plain .npy files (no pickles), so worker processes computing other
        frameworks of the same (case, dtype) map it (`load`) instead of computing it again: one file
        per array, because a zip's per-member overhead made loading an .npz cost more than computing."""
        arrays = {"x": self.x, "z": self.z, "temperature": np.float64(self.temperature), "probs": self.probs,
                  "softmax_t1": self.softmax_t1, "same_t": np.bool_(self.expected_temperature is self.expected)}
        arrays.update({f"cot.{op}": g for op, g in self.cotangents.items()})
        for tag, table in (("e", self.expected), ("t", self.expected_temperature)):
            if tag == "t" and self.expected_temperature is self.expected:
                continue
            for (op, pass_), e in table.items():
                arrays.update({f"{tag}.{op}.{pass_}.value": e.value, f"{tag}.{op}.{pass_}.unit": e.unit,
                               f"{tag}.{op}.{pass_}.bound": np.float64(e.bound)})
        arrays["dtype"] = np.str_(next(iter(self.expected.values())).dtype)
        path.mkdir()
        for name, a in arrays.items():
            np.save(path / f"{name}.npy", np.asarray(a), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Reference:
        """The arrays `save` wrote: the graded values memory-mapped read-only (the page cache serves every
        worker), the inputs handed to frameworks as ordinary writable arrays (torch warns on, and may
        share, a read-only buffer)."""
        def get(name: str, copy: bool = False) -> np.ndarray:
            a = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            return np.array(a) if copy or a.ndim == 0 else a  # a 0-d map is copied: nothing to share

        dtype = str(get("dtype"))

        def table(tag: str) -> dict[tuple[str, str], Expected]:
            return {(op, p): Expected(get(f"{tag}.{op}.{p}.value"), get(f"{tag}.{op}.{p}.unit"), dtype,
                                      float(get(f"{tag}.{op}.{p}.bound"))) for op in OPS for p in PASSES}

        expected = table("e")
        return cls(x=get("x", True), z=get("z", True), temperature=float(get("temperature")),
                   probs=get("probs", True), cotangents={op: get(f"cot.{op}", True) for op in OPS}, expected=expected,
                   expected_temperature=expected if bool(get("same_t")) else table("t"),
                   softmax_t1=get("softmax_t1"))


def output_shape(op: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of op's output for logits of `shape` (classes last)."""
    return shape if op in ROW_OPS else () if op == "cross_entropy_mean" else shape[:-1]


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


def exact_vjp(op: str, s: np.ndarray, targets: np.ndarray, probs: np.ndarray, g: np.ndarray,
              temperature: float) -> np.ndarray:
    """analytic_vjp without its cancellation: where the formula subtracts nearly equal terms (at the
    row's dominant class k, or the CE target t) the entry is rewritten through rest_i = sum_{j!=i} s_j,
    which is a sum of small positive terms and keeps full relative accuracy:
    softmax: s_k * sum_{j!=k} s_j (g_k - g_j); log_softmax: rest_k * sum(g) - sum_{j!=k} g_j;
    CE: -rest_t; soft CE: sum_{j!=k} p_j - sum(p) * rest_k.
    The rewrite is used where s at that index is >= 1/2 (dominant). Chance near-equalities elsewhere
    (g_i ~ sum_j g_j s_j) keep long double's 2^-64 times the
    cancellation: docs/grading.md states that bound for backward references."""
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
        # special rows keep their NaN; where s at idx is below 1/2 the plain formula cancels at most 2x,
        # and the rewrite (a difference of sums near 1) would cancel more
        keep = np.isfinite(at(out, idx)) & (at(s, idx) >= 0.5)
        np.put_along_axis(out, idx[..., None], np.where(keep, val / T, at(out, idx)), axis=-1)
    return out


def _expected(x: np.ndarray, case: Case, probs: np.ndarray, cot: dict[str, np.ndarray], dtype: str,
              T: float, division: bool) -> tuple[dict[tuple[str, str], Expected], np.ndarray]:
    """Exact op(x) and gradients (times 1 / T: wrt z when T != 1 is the impl's own division), graded
    units from the error model; and the exact softmax."""
    p_ld = probs.astype(LD)
    fwd = _exact_forward(x, case.targets, p_ld)
    s_grad = np.where(fwd["special"][..., None], LD(np.nan), fwd["softmax"])
    values = {(op, "forward"): np.asarray(fwd[op]) for op in OPS}
    for op in OPS:
        values[(op, "backward")] = exact_vjp(op, s_grad, case.targets, p_ld, cot[op].astype(LD), T)
    finite_x = np.where(fwd["special"][..., None], 0.0, np.asarray(x, dtype=np.float64))
    s = np.nan_to_num(np.asarray(fwd["softmax"], dtype=np.float64))
    hi = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    unit = units(finite_x, s, case.targets, probs, cot, hi, dtype, grad_scale=1.0 / T, division=division)
    n = case.n_classes
    return ({k: Expected(values[k], unit[k], dtype, ulp_bound(k[0], k[1], n)) for k in values},
            np.asarray(fwd["softmax"], dtype=np.float64))


def compute_reference(case: Case, dtype: str) -> Reference:
    z = round_to(case.logits, dtype)
    T = float(case.temperature)
    x = divide_rounded(z, T, dtype) if T != 1.0 else z
    probs = round_to(case.probs, dtype)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        cot = {op: cotangent(case, op, output_shape(op, x.shape), dtype) for op in OPS}
        expected, softmax = _expected(x.astype(LD), case, probs, cot, dtype, 1.0, False)
        if T == 1.0:
            expected_t, sm1 = expected, softmax
        else:
            expected_t, _ = _expected(z.astype(LD) / LD(T), case, probs, cot, dtype, T, True)
            sm1 = np.asarray(_exact_forward(z.astype(LD), case.targets, probs.astype(LD))["softmax"],
                             dtype=np.float64)
    return Reference(x=x, z=z, temperature=T, probs=probs, cotangents=cot, expected=expected,
                     expected_temperature=expected_t, softmax_t1=sm1)
