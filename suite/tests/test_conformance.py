"""Conformance of every installed backend over the whole catalog (array-api-tests style: the
environment picks what runs; SUITE_BACKENDS=torch,jax and SUITE_DEVICES=cpu,gpu narrow or widen it).

* `shifted`, `shifted_log1p` and `fused` must be `ok` on every (case, dtype, op, pass) whose exact
  answer is finite and representable in the dtype.
* `naive` (and `temperature`, its twin) must reproduce the seeds' failures: non-finite results on the
  seeds' extreme cases, asserted, and seed 002's NaN gone at T = 10.
* A known deviation is listed in KNOWN with its reason and runs as xfail(strict=True): when a framework
  (or the formula) is fixed the test XPASSes, fails, and the entry must go.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import pandas as pd
import pytest

from cases import CASES
from suite.backend_api import discover
from suite.dtypes import DTYPES
from suite.ops import IMPLS, OPS, PASSES, STABLE_IMPLS
from suite.runner import Plan, run

_known = discover()
_env_backends = [b for b in os.environ.get("SUITE_BACKENDS", "").split(",") if b]
BACKENDS = _env_backends or [n for n, i in _known.items() if i.installed]
DEVICES = [d for d in os.environ.get("SUITE_DEVICES", "cpu").split(",") if d]
AUTODIFF = ("torch", "tensorflow", "jax")  # numpy's gradients are analytic formulas


# The workers take one (backend, dtype) task at a time in plan order: the longest tasks first (JAX compiles
# a program per shape and dtype, TensorFlow runs eagerly; docs/performance.md), so the short ones fill the end and
# neither worker idles while the other finishes a long task. Which rows are computed does not change.
_SLOWEST_FIRST = sorted(_known, key=lambda b: (["jax", "tensorflow"] + [b]).index(b))


@functools.cache
def _whole_matrix(device: str):
    """Every selected, installed backend's whole catalog on one device, computed once per test session
    in one run (one worker pool, tasks of all frameworks sharing the cores and the references)."""
    installed = sorted((b for b in BACKENDS if b in _known and _known[b].installed), key=_SLOWEST_FIRST.index)
    plan = Plan(backends=installed, devices=[device], dtypes=list(DTYPES), ops=list(OPS),
                impls=list(IMPLS), passes=list(PASSES), cases=list(CASES))
    return run(plan, progress=False, jobs=min(2, os.cpu_count() or 1)) if installed else (pd.DataFrame(), None)


def matrix(backend: str, device: str) -> pd.DataFrame:
    """The whole catalog for one backend and device."""
    if backend not in _known or not _known[backend].installed:
        pytest.skip(f"{backend} is not installed ({_known[backend].install_hint if backend in _known else '?'})")
    df, info = _whole_matrix(device)
    df = df[df.backend == backend]
    if df.empty:
        skipped = [s for s in (info.skipped if info else []) if s.startswith(f"{backend}/")]
        pytest.skip("; ".join(skipped) or f"{backend} produced no rows on {device}")
    return df


class Known(NamedTuple):
    """A deviation the suite found and explains. "*" matches every backend, device, impl, op, pass or dtype."""

    backends: tuple[str, ...]
    devices: tuple[str, ...]
    impls: tuple[str, ...]
    ops: tuple[str, ...]
    passes: tuple[str, ...]
    dtypes: tuple[str, ...]
    cases: tuple[str, ...]
    reason: str

    def matches(self, backend: str, device: str, impl: str, op: str, pass_: str, dtype: str) -> bool:
        return all(v in k or "*" in k for k, v in ((self.backends, backend), (self.devices, device),
                                                    (self.impls, impl), (self.ops, op), (self.passes, pass_),
                                                    (self.dtypes, dtype)))


ALL = ("*",)
# case lists (re-derived from the full CPU run; regenerate with `python -m suite.tests.known_cases STORE`)
LARGE_OFFSET = ("all_negative_fp64", "constant_large", "huge_negative", "large_offset_1e6", "large_offset_1e8",
                "mixed_extremes_1e4", "sum_overflow_fp32", "sum_overflow_fp64")
CE_LSE_CASES = (*LARGE_OFFSET, "log1p_dominant_rows", "seed003_linspace1e5", "seed003_linspace500",
                "seed003_linspace5e5")
NUMPY_BF16_CASES = ("llm_vocab32000_T1", "llm_vocab32000_T0.7", "vocab_131071_odd", "vocab_131072_normal",
                    "vocab_262147_odd", "ties_4096_equal")
TORCH_LSE_BWD_CASES = (*LARGE_OFFSET, "all_negative_fp32", "exp_edge_fp32_above", "exp_edge_fp32_below",
                       "exp_edge_fp32_far", "exp_edge_fp64_above", "exp_edge_fp64_below", "exp_edge_fp64_far",
                       "llm_vocab32000_T0.01", "normal_scale10_T0.01", "normal_scale_100", "seed003_linspace1e5",
                       "seed003_linspace500", "seed003_linspace5e5", "ties_at_max_extreme")
FTZ_CASES = ("normal_scale_100", "llm_vocab32000_T0.01")
LOG1P_AUTODIFF_CASES = (*LARGE_OFFSET, "llm_vocab32000_T0.01", "llm_vocab32000_T1", "normal_scale10_T100",
                        "normal_scale_1", "normal_scale_100", "seed003_linspace1", "ties_4096_equal",
                        "vocab_131071_odd", "vocab_131072_normal", "vocab_262147_odd")
WIDE_CASES = ("vocab_131071_odd", "vocab_152064_spiky", "llm_vocab32000_T0.7")
STABLE_FORMULAS = ("shifted", "shifted_log1p", "online")
# Measured on CPU with torch 2.13.0, tensorflow-cpu 2.21.0, jax 0.10.2, numpy 2.4 / scipy 1.17 under the
# error model of suite/error_model.py (docs/results.md: the known deviations). GPU rows: docs/results.md.
KNOWN: list[Known] = [
    Known(ALL, ALL, ("fused",), ("soft_cross_entropy",), ("forward",), ALL,
          ("mask_partial", "mask_causal", "mask_all_but_one", "normal_scale_10000"),
          "probability-target CE computes p * log_softmax with p = 0 where log_softmax is -inf (masked classes, "
          "or below -65504 in float16): 0 * -inf = NaN, where the convention (and the limit) is 0"),
    Known(ALL, ALL, STABLE_FORMULAS, ("cross_entropy", "cross_entropy_mean"), ("forward",), ALL, CE_LSE_CASES,
          "seeds 000/001's stable CE, LogSumExp minus the original target logit, cancels: lse and x_t are both "
          "large where the logits are, so rounding lse costs u|lse| absolute on a small CE (seed 003's "
          "form, -(x_t - m) + log S, and every framework's fused CE do not)"),
    Known(("numpy",), ALL, ("fused", *STABLE_FORMULAS), ALL, ALL, ("bfloat16",), NUMPY_BF16_CASES,
          "numpy (and so scipy.special) sums bfloat16 in bfloat16: np.sum's pairwise blocks accumulate 8-bit "
          "partial sums, so on tens of thousands of classes the row sum is off by percents (4,096 equal "
          "logits: each probability 1/256, a row sum of 16); torch, TensorFlow and XLA accumulate in float32"),
    Known(("torch",), ALL, ("fused",), ("logsumexp",), ("backward",), ALL, TORCH_LSE_BWD_CASES,
          "torch.logsumexp's backward computes exp(x - lse) from the rounded lse (BHH's division-free "
          "softmax, Thm 3.4): an absolute error u|lse| in the exponent, so a relative error u|lse| in every "
          "gradient, which grows with the logits' magnitude although the gradient (the softmax) does not"),
    Known(("tensorflow", "jax"), ALL, ("fused", *STABLE_FORMULAS), ALL, ALL, ("bfloat16", "float32", "float64"),
          FTZ_CASES,
          "TensorFlow's and XLA's CPU kernels run with denormals flushed to zero: a subnormal intermediate "
          "(exp(x_i - m), s_i) becomes 0, and so do normal results computed from it (tf.nn.softmax float32 "
          "returns 0 for 2.02e-38; float64 softmax-family gradients of ~4e-308 come back as 0)"),
    Known(("torch", "tensorflow", "jax"), ALL, ("shifted_log1p",), ALL, ("backward",), ALL, LOG1P_AUTODIFF_CASES,
          "autodiff of a + log1p(s) gives d/dx_k = 1 - s / (1 + s) at the max k, which cancels when s is large "
          "(near-uniform or very wide rows): O(n u) relative error there; a custom VJP would avoid it"),
    Known(("torch", "tensorflow"), ("cpu",), ("fused",), ALL, ALL, ("float32", "float64"), WIDE_CASES,
          "torch's and TensorFlow's CPU softmax family on very wide rows (131,071 classes in float32, 152,064 "
          "with a +40 spike in float64, 32,000 at T = 0.7) is past the pairwise-summation bound: their "
          "vectorized reductions accumulate sequentially over chunks (mechanism not proven here)"),
    Known(("torch",), ("cpu",), ("fused",), ("cross_entropy_mean",), ("forward",), ("float16",),
          ("normal_scale_10000",),
          "F.cross_entropy(reduction='mean') in float16 overflows summing 16 losses of ~2e4 (exact mean fits fp16)"),
    Known(("tensorflow",), ("cpu",), ("fused", *STABLE_FORMULAS), ("cross_entropy_mean",), ("forward",),
          ("float16",), ("normal_scale_10000",),
          "tf.reduce_mean in float16 overflows summing 16 losses of ~2e4 (exact mean fits fp16)"),
]


def _excused(backend: str, device: str, impl: str, op: str, pass_: str, dtype: str) -> set[str]:
    return {c for k in KNOWN if k.matches(backend, device, impl, op, pass_, dtype) for c in k.cases}


def _describe(rows: pd.DataFrame) -> str:
    cols = ["case", "verdict", "ulp_err_scaled", "ulp_bound", "message"]
    return "\n" + rows[cols].to_string(index=False, max_colwidth=70)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", STABLE_IMPLS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_stable_impls_ok_where_the_answer_is_finite(backend, device, impl, dtype, op, pass_):
    df = matrix(backend, device)
    rows = df[(df.impl == impl) & (df.dtype == dtype) & (df.op == op) & (df["pass"] == pass_)
              & df.exact_finite.astype(bool)]
    excused = _excused(backend, device, impl, op, pass_, dtype)
    bad = rows[(rows.verdict != "ok") & ~rows.case.isin(excused)]
    assert bad.empty, f"{len(bad)} of {len(rows)} cases not ok:" + _describe(bad)


def _known_params():
    for k in KNOWN:
        for backend in BACKENDS:
            for device in DEVICES:
                if (backend in k.backends or "*" in k.backends) and (device in k.devices or "*" in k.devices):
                    first = (k.cases or ("none",))[0]
                    yield pytest.param(backend, device, k,
                                       id=f"{backend}-{device}-{'+'.join(k.impls)}-{'+'.join(k.ops)}-{first}",
                                       marks=pytest.mark.xfail(strict=True, reason=k.reason))


@pytest.mark.parametrize(("backend", "device", "known"), list(_known_params()))
def test_known_deviation_still_there(backend, device, known):
    """Each KNOWN entry as its own test: xfail while the deviation lasts, XPASS (a failure) once fixed."""
    df = matrix(backend, device)
    sel = df.case.isin(known.cases) & df.exact_finite.astype(bool)
    for col, vals in (("impl", known.impls), ("op", known.ops), ("pass", known.passes), ("dtype", known.dtypes)):
        if "*" not in vals:
            sel &= df[col].isin(vals)
    if "*" in known.impls:
        sel &= df.impl.isin(STABLE_IMPLS)
    rows = df[sel]
    assert not rows.empty, "the known deviation selects no rows"
    assert (rows.verdict == "ok").all(), _describe(rows[rows.verdict != "ok"])


# The seeds' failures, which naive must reproduce: (case, op, pass, dtypes)
SEED_FAILURES = [
    ("seed000_batch", "softmax", "forward", DTYPES),  # exp(1000) = inf -> inf/inf
    ("seed000_batch", "cross_entropy", "forward", DTYPES),  # -log(0) and NaN from the row above
    ("seed000_batch", "cross_entropy_mean", "backward", DTYPES),  # NaN gradients (seed 001)
    ("seed002_T1", "soft_cross_entropy", "forward", ("float16", "bfloat16", "float32")),  # 0 * log(0)
    ("seed003_linspace5e5", "softmax", "forward", ("bfloat16", "float32", "float64")),  # NaN rows
    ("seed003_linspace1e5", "cross_entropy", "forward", ("bfloat16", "float32", "float64")),  # [inf inf inf]
    ("seed003_linspace1e5", "cross_entropy_mean", "backward", ("bfloat16", "float32", "float64")),  # NaN grad
    ("seed004_big", "softmax", "forward", ("bfloat16", "float32", "float64")),  # exp(99999999)
]


@pytest.mark.parametrize("impl", ["naive", "temperature"])
@pytest.mark.parametrize(("case", "op", "pass_", "dtypes"), SEED_FAILURES,
                         ids=[f"{c}-{o}-{p}" for c, o, p, _ in SEED_FAILURES])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_naive_reproduces_the_seed_failures(backend, device, case, op, pass_, dtypes, impl):
    df = matrix(backend, device)
    rows = df[(df.impl == impl) & (df.case == case) & (df.op == op) & (df["pass"] == pass_)
              & df.dtype.isin(dtypes)]
    assert len(rows) == len(dtypes)
    assert rows.exact_finite.astype(bool).all(), "the exact answer should be finite here"
    assert (rows.verdict == "nonfinite").all(), _describe(rows)
    assert (rows.n_nonfinite > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_10_removes_seed_002s_nan(backend, device):
    df = matrix(backend, device)
    sel = (df.impl == "temperature") & (df.op == "soft_cross_entropy") & (df["pass"] == "forward") & (
        df.dtype == "float32")
    t1 = df[sel & (df.case == "seed002_T1")]
    t10 = df[sel & (df.case == "seed002_T10")]
    assert (t1.verdict == "nonfinite").all() and len(t1) == 1
    assert (t10.verdict == "ok").all() and len(t10) == 1
    soft = df[(df.op == "softmax") & (df["pass"] == "forward") & (df.impl == "shifted") & (df.dtype == "float64")]
    tv = soft.set_index("case").tv_to_t1
    assert tv["seed002_T1"] < 1e-12 < tv["seed002_T10"]  # T = 10 changes the distribution itself
