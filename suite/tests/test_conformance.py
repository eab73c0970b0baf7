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


@functools.cache
def matrix(backend: str, device: str) -> pd.DataFrame:
    """The whole catalog for one backend and device, computed once per test session."""
    if backend not in _known or not _known[backend].installed:
        pytest.skip(f"{backend} is not installed ({_known[backend].install_hint if backend in _known else '?'})")
    plan = Plan(backends=[backend], devices=[device], dtypes=list(DTYPES), ops=list(OPS),
                impls=list(IMPLS), passes=list(PASSES), cases=list(CASES))
    df, info = run(plan, progress=False, jobs=min(2, os.cpu_count() or 1))
    if df.empty:
        pytest.skip("; ".join(info.skipped) or f"{backend} produced no rows on {device}")
    return df


# (backends, impl, op, pass, dtypes, cases, reason). "*" matches everything.
KNOWN: list[tuple[tuple[str, ...], str, str, str, tuple[str, ...], tuple[str, ...], str]] = []


def _matches(entry, backend: str, impl: str, op: str, pass_: str, dtype: str) -> bool:
    backends, k_impl, k_op, k_pass, dtypes, _, _ = entry
    return ((backend in backends or "*" in backends) and impl == k_impl and op in (k_op, "*")
            and pass_ in (k_pass, "*") and (dtype in dtypes or "*" in dtypes))


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
    excused = {c for e in KNOWN if _matches(e, backend, impl, op, pass_, dtype) for c in e[5]}
    bad = rows[(rows.verdict != "ok") & ~rows.case.isin(excused)]
    assert bad.empty, f"{len(bad)} of {len(rows)} cases not ok:" + _describe(bad)


def _known_params():
    for entry in KNOWN:
        backends, impl, op, pass_, dtypes, cases, reason = entry
        for backend in BACKENDS:
            if backend not in backends and "*" not in backends:
                continue
            for device in DEVICES:
                yield pytest.param(backend, device, entry, id=f"{backend}-{device}-{impl}-{op}-{pass_}-{cases[0]}",
                                   marks=pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.parametrize(("backend", "device", "entry"), list(_known_params()))
def test_known_deviation_still_there(backend, device, entry):
    """Each KNOWN entry as its own test: xfail while the deviation lasts, XPASS (a failure) once fixed."""
    _, impl, op, pass_, dtypes, cases, _ = entry
    df = matrix(backend, device)
    sel = (df.impl == impl) & df.case.isin(cases) & df.exact_finite.astype(bool)
    if op != "*":
        sel &= df.op == op
    if pass_ != "*":
        sel &= df["pass"] == pass_
    if "*" not in dtypes:
        sel &= df.dtype.isin(dtypes)
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
