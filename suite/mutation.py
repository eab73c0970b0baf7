"""Mutation testing of the grader: grossly wrong outputs made from the exact answer must be rejected,
and the exact answer correctly rounded to the dtype must be accepted, over the catalog in every dtype.

    python -m suite.mutation            # the mutation score table (docs/grading.md)

A mutation is *effective* on a (case, dtype, op, pass) where it moves some element of the correctly
rounded answer by more than the error model allows there (B graded units, suite.error_model); the
grader must reject every effective mutation. The share of effective mutations among those that
change the rounded output at all says how much the bound leaves room for: a bound so loose that
doubling a probability stays within it would show here as a low share.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from cases import CASES
from suite.dtypes import DTYPES, round_to
from suite.metrics import score
from suite.ops import OPS, PASSES
from suite.reference import Expected, compute_reference


def _swap_top2(v: np.ndarray) -> np.ndarray:
    """The two largest entries of each row exchanged."""
    out = v.copy()
    order = np.argsort(v, axis=-1)
    if v.shape[-1] < 2:
        return out
    i, j = order[..., -1:], order[..., -2:-1]
    a, b = np.take_along_axis(v, i, -1), np.take_along_axis(v, j, -1)
    np.put_along_axis(out, i, b, -1)
    np.put_along_axis(out, j, a, -1)
    return out


def _one_hot(v: np.ndarray) -> np.ndarray:
    out = np.zeros_like(v)
    np.put_along_axis(out, np.argmax(v, axis=-1)[..., None], 1.0, -1)
    return out


Mutation = Callable[[np.ndarray], np.ndarray]
FORWARD: dict[str, dict[str, Mutation]] = {
    "softmax": {"one-hot at argmax": _one_hot, "top two swapped": _swap_top2,
                "permuted (rolled)": lambda v: np.roll(v, 1, axis=-1), "x2": lambda v: 2 * v,
                "x0.5": lambda v: 0.5 * v},
    "log_softmax": {"+1 nat": lambda v: v + 1, "-1 nat": lambda v: v - 1},
    "logsumexp": {"x(1 + 1e-2)": lambda v: v * (1 + 1e-2)},
    "cross_entropy": {"+1 nat": lambda v: v + 1, "-1 nat": lambda v: v - 1},
    "cross_entropy_mean": {"+1 nat": lambda v: v + 1},
    "soft_cross_entropy": {"+1 nat": lambda v: v + 1},
}
BACKWARD: dict[str, Mutation] = {"zero": np.zeros_like, "x2": lambda v: 2 * v, "negated": lambda v: -v}


def mutations(op: str, pass_: str) -> dict[str, Mutation]:
    return FORWARD[op] if pass_ == "forward" else BACKWARD


def _effective(got: np.ndarray, e: Expected) -> bool:
    """Some element further from the exact value than the model allows (finite elements only; a zero
    where the exact value is subnormal is a flush, which the grader counts but does not grade)."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((got - e.hi) - e.lo)
        flushed = (got == 0) & e.tiny
        return bool(np.any(np.isfinite(e.want) & ~flushed & (err > e.bound * e.graded_unit)))


def grade_mutations(cases=CASES, dtypes=DTYPES) -> pd.DataFrame:
    """One row per (case, dtype, op, pass, mutation): whether it changed the rounded answer, whether
    it was effective, and the grader's verdict; plus a row per (case, dtype, op, pass) for the exact
    answer itself (mutation 'none (correctly rounded)')."""
    rows = []
    with np.errstate(all="ignore"):
        for case in cases:
            for dtype in dtypes:
                ref = compute_reference(case, dtype)
                for op in OPS:
                    for pass_ in PASSES:
                        e = ref.expected[(op, pass_)]
                        if not e.all_finite:
                            continue
                        base = {"case": case.name, "dtype": dtype, "op": op, "pass": pass_}
                        rows.append({**base, "mutation": "none (correctly rounded)", "changed": False,
                                     "effective": False, "verdict": score(e.want, e, op, pass_)["verdict"]})
                        for name, f in mutations(op, pass_).items():
                            got = round_to(f(e.want), dtype)
                            changed = bool(np.any((got != e.want) & ~((got == 0) & e.tiny)))
                            rows.append({**base, "mutation": name, "changed": changed,
                                         "effective": _effective(got, e),
                                         "verdict": score(got, e, op, pass_)["verdict"]})
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per op, pass, mutation and dtype: mutations that changed the answer, how many of those were
    effective and rejected, and effective ones the grader let through (must be 0)."""
    mut = df[df.mutation != "none (correctly rounded)"]
    changed = mut[mut.changed]
    g = changed.groupby(["pass", "op", "mutation", "dtype"], sort=False)
    out = pd.DataFrame({
        "changed": g.size(),
        "effective": g.effective.sum(),
        "rejected": g.verdict.agg(lambda v: int((v != "ok").sum())),
        "effective but ok": g.apply(lambda x: int((x.effective & (x.verdict == "ok")).sum()), include_groups=False),
    }).reset_index()
    out["score %"] = (100 * out.rejected / out.changed).round(1)
    return out


def score_table(s: pd.DataFrame) -> pd.DataFrame:
    """Rejected / changed, in %, per mutation (rows) and dtype (columns), and over all dtypes."""
    t = s.pivot_table(index=["pass", "op", "mutation"], columns="dtype", values="score %", aggfunc="first",
                      sort=False)
    t = t[[d for d in DTYPES if d in t.columns]]
    g = s.groupby(["pass", "op", "mutation"], sort=False)
    t["all"] = (100 * g.rejected.sum() / g.changed.sum()).round(1)
    return t.reset_index()


def main() -> None:
    df = grade_mutations()
    exact = df[df.mutation == "none (correctly rounded)"]
    print(f"correctly rounded exact answers accepted: {int((exact.verdict == 'ok').sum())} of {len(exact)} "
          f"({exact.case.nunique()} cases x {exact.dtype.nunique()} dtypes, every op and pass)")
    s = summarize(df)
    total = s[["changed", "rejected", "effective but ok"]].sum()
    print(f"mutations that changed the rounded answer: {int(total.changed)}; rejected {int(total.rejected)} "
          f"({100 * total.rejected / total.changed:.1f}%); effective but passed: {int(total['effective but ok'])}")
    print("\nrejected, % of the mutations that changed the rounded answer:")
    print(score_table(s).to_markdown(index=False))
    print("\nin detail:")
    print(s.to_markdown(index=False))


if __name__ == "__main__":
    main()
