"""The hand-written implementations, written once against a few primitives every backend supplies.

`naive`/`temperature` are the seeds' unstable formulas; `shifted` is max-subtraction with CE as
LogSumExp minus the original target logit (seeds 000/001/003); `shifted_log1p` is the algorithm
Blanchard, Higham & Higham (2021) recommend; `online` is the single-pass running-max / running-sum
normalizer over chunks of the class axis that FlashAttention-style kernels use. Each backend maps
the primitives onto its framework; nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Array = Any


class Primitives(Protocol):
    """Last-axis primitives; arithmetic operators (+ - * /) are the framework's own."""

    def exp(self, x: Array) -> Array: ...
    def log(self, x: Array) -> Array: ...
    def log1p(self, x: Array) -> Array: ...
    def max(self, x: Array) -> Array: ...  # keepdims
    def sum(self, x: Array) -> Array: ...  # keepdims
    def squeeze(self, x: Array) -> Array: ...  # drop the (size-1) last axis
    def take(self, x: Array, targets: Array) -> Array: ...  # x[..., t], keepdims
    def first_max_mask(self, x: Array) -> Array: ...  # True at the first argmax of each row
    def where(self, cond: Array, a: Array, b: Array) -> Array: ...
    def zeros_like(self, x: Array) -> Array: ...
    def mean(self, x: Array) -> Array: ...  # over every element, a scalar
    def stop_gradient(self, x: Array) -> Array: ...  # identity, invisible to autodiff
    def fold_chunks(self, step: Callable, carry: Any, x: Array, size: int) -> Any: ...  # below


@dataclass(frozen=True)
class Formula:
    """softmax/log_softmax/logsumexp of x (already divided by T); `stable` picks the CE form."""

    softmax: Callable[[Primitives, Array], Array]
    log_softmax: Callable[[Primitives, Array], Array]
    logsumexp: Callable[[Primitives, Array], Array]
    stable: bool


def _naive_softmax(xp: Primitives, x: Array) -> Array:
    e = xp.exp(x)
    return e / xp.sum(e)


NAIVE = Formula(
    softmax=_naive_softmax,
    log_softmax=lambda xp, x: xp.log(_naive_softmax(xp, x)),
    logsumexp=lambda xp, x: xp.squeeze(xp.log(xp.sum(xp.exp(x)))),
    stable=False,
)


def _shifted_parts(xp: Primitives, x: Array) -> tuple[Array, Array, Array, Array]:
    """softmax(x) = softmax(x - c) for any constant c, so the shift is a constant to autodiff too
    (as in JAX's logsumexp): differentiating through max(x) adds 1 - sum(e/S), O(n u), at the max."""
    a = xp.stop_gradient(xp.max(x))
    d = x - a
    e = xp.exp(d)
    return a, d, e, xp.sum(e)


SHIFTED = Formula(
    softmax=lambda xp, x: (lambda a, d, e, s: e / s)(*_shifted_parts(xp, x)),
    log_softmax=lambda xp, x: (lambda a, d, e, s: d - xp.log(s))(*_shifted_parts(xp, x)),
    logsumexp=lambda xp, x: (lambda a, d, e, s: xp.squeeze(a + xp.log(s)))(*_shifted_parts(xp, x)),
    stable=True,
)


def _log1p_parts(xp: Primitives, x: Array) -> tuple[Array, Array, Array, Array]:
    """a = x_k at the first argmax k, s = sum over i != k of exp(x_i - a). `a` is gathered at k,
    not max(x): autodiff of max splits the gradient between tied maxima, while s excludes only k."""
    k = xp.first_max_mask(x)
    a = xp.sum(xp.where(k, x, xp.zeros_like(x)))
    d = x - a
    e = xp.exp(d)
    s = xp.sum(xp.where(k, xp.zeros_like(e), e))
    return a, d, e, s


SHIFTED_LOG1P = Formula(
    softmax=lambda xp, x: (lambda a, d, e, s: e / (s + 1))(*_log1p_parts(xp, x)),
    log_softmax=lambda xp, x: (lambda a, d, e, s: d - xp.log1p(s))(*_log1p_parts(xp, x)),
    logsumexp=lambda xp, x: (lambda a, d, e, s: xp.squeeze(a + xp.log1p(s)))(*_log1p_parts(xp, x)),
    stable=True,
)

ONLINE_CHUNK = 1024  # classes per chunk of `online` (recorded in env.json and in its rows' message)


def fold_chunks(step: Callable[[Any, Array], Any], carry: Any, x: Array, size: int,
                split: Callable[[Array, list[int]], Any] | None = None) -> Any:
    """carry = step(carry, chunk) for each chunk of the class axis in order: a Python loop (eager
    frameworks). `split(x, sizes)`, the framework's split, cuts every chunk in one op: the same values
    as slicing x[..., i:i + size], but autodiff then joins the chunks' gradients in one concat instead
    of adding up one full-width, zero-padded gradient per slice (TensorFlow's backward at 262,147
    classes: 6x faster; the one visible difference is a zero gradient's sign, -0 where adding the +0
    padding gave +0). JAX's primitive is lax.scan over the same chunks, padded with -inf, because a jit
    of the unrolled loop took 143 s to compile at 262,147 classes."""
    n, starts = x.shape[-1], range(0, x.shape[-1], size)
    if split is not None and n > size:
        chunks = split(x, [min(size, n - start) for start in starts])
    else:
        chunks = (x[..., start:start + size] for start in starts)
    for chunk in chunks:
        carry = step(carry, chunk)
    return carry


def _online_parts(xp: Primitives, x: Array, chunk: int | None = None) -> tuple[Array, Array]:
    """Single-pass running max m and running sum s over chunks of the class axis (Milakov &
    Gimelshein 2018), as a GPU kernel streams a row: per chunk, m_new = max(m, max(x_c)) and
    s = s * exp(m - m_new) + sum(exp(x_c - m_new)), from s = 0. The rescaling factor
    costs one extra rounding per chunk. m is a constant to autodiff (as in `shifted`); a shift of
    -inf (every class so far masked) is replaced by 0 so that an all -inf chunk adds exactly 0."""
    def step(carry, xc):
        m, s = carry
        mc = xp.stop_gradient(xp.max(xc))
        m_new = xp.where(m >= mc, m, mc)
        shift = xp.where(m_new == -np.inf, xp.zeros_like(m_new), m_new)
        return m_new, s * xp.exp(m - shift) + xp.sum(xp.exp(xc - shift))

    m0 = xp.stop_gradient(x[..., :1])  # a lower bound on the first chunk's max, as -inf would be, in x's dtype
    return xp.fold_chunks(step, (m0, xp.zeros_like(m0)), x, chunk or ONLINE_CHUNK)


ONLINE = Formula(
    softmax=lambda xp, x: (lambda m, s: xp.exp(x - m) / s)(*_online_parts(xp, x)),
    log_softmax=lambda xp, x: (lambda m, s: (x - m) - xp.log(s))(*_online_parts(xp, x)),
    logsumexp=lambda xp, x: (lambda m, s: xp.squeeze(m + xp.log(s)))(*_online_parts(xp, x)),
    stable=True,
)

FORMULAS: dict[str, Formula] = {
    "naive": NAIVE,
    "temperature": NAIVE,  # seed 002: the naive formula on z / T (every impl receives z / T)
    "shifted": SHIFTED,
    "shifted_log1p": SHIFTED_LOG1P,
    "online": ONLINE,
}


def apply(formula: Formula, op: str, xp: Primitives, x: Array, targets: Array, probs: Array) -> Array:
    """One op of a hand-written implementation on x = z / T."""
    if op == "softmax":
        return formula.softmax(xp, x)
    if op == "log_softmax":
        return formula.log_softmax(xp, x)
    if op == "logsumexp":
        return formula.logsumexp(xp, x)
    if op in ("cross_entropy", "cross_entropy_mean"):
        if formula.stable:  # LogSumExp minus the ORIGINAL target logit
            ce = formula.logsumexp(xp, x) - xp.squeeze(xp.take(x, targets))
        else:  # -log(softmax[target]): seeds 000/001
            ce = -xp.log(xp.squeeze(xp.take(formula.softmax(xp, x), targets)))
        return xp.mean(ce) if op == "cross_entropy_mean" else ce
    if op == "soft_cross_entropy":
        if formula.stable:  # 0 * log(0) := 0, so masked classes with p = 0 contribute nothing
            lsm = formula.log_softmax(xp, x)
            terms = xp.where(probs == 0, xp.zeros_like(lsm), probs * lsm)
        else:  # seed 002: -sum(p * log(softmax)) gives 0 * -inf = NaN
            terms = probs * xp.log(formula.softmax(xp, x))
        return -xp.squeeze(xp.sum(terms))
    raise ValueError(f"unknown op {op!r}")


def analytic_vjp(op: str, s: np.ndarray, targets: np.ndarray, probs: np.ndarray,
                 g: np.ndarray, temperature: float) -> np.ndarray:
    """d op(z / T) / dz applied to cotangent g, from a softmax s (seed 003's analytic gradients).

    Used by backends without autodiff (numpy) with their own softmax, and by the reference with
    the exact one; works in any numpy float dtype, long double included.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if op == "softmax":
            out = s * (g - np.sum(g * s, axis=-1, keepdims=True))
        elif op == "log_softmax":
            out = g - s * np.sum(g, axis=-1, keepdims=True)
        elif op == "logsumexp":
            out = g[..., None] * s
        elif op in ("cross_entropy", "cross_entropy_mean"):
            onehot = np.zeros_like(s)
            np.put_along_axis(onehot, targets[..., None], 1, axis=-1)
            if op == "cross_entropy":
                out = g[..., None] * (s - onehot)
            else:
                out = g * (s - onehot) / max(int(np.prod(s.shape[:-1])), 1)
        elif op == "soft_cross_entropy":
            out = g[..., None] * (s * np.sum(probs, axis=-1, keepdims=True) - probs)
        else:
            raise ValueError(f"unknown op {op!r}")
        return out / s.dtype.type(temperature)
