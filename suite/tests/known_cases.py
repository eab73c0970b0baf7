"""Re-derives the case lists of test_conformance.KNOWN from a store's accuracy table: for each entry,
the cases whose stable-implementation rows it matches and that are not `ok` where the exact answer
is finite; and the rows no entry explains (which the conformance tests would fail on).

    python -m suite.tests.known_cases results/local
"""

from __future__ import annotations

import sys

import pandas as pd

from suite.ops import STABLE_IMPLS
from suite.store import Store
from suite.tests.test_conformance import KNOWN


def main(store: str) -> None:
    df = Store(store).load("accuracy")
    bad = df[df.impl.isin(STABLE_IMPLS) & df.exact_finite.astype(bool) & (df.verdict != "ok")]
    explained = pd.Series(False, index=bad.index)
    for k in KNOWN:
        hit = bad.apply(lambda r, k=k: k.matches(*(r[c] for c in ("backend", "device", "impl", "op", "pass", "dtype"))),
                        axis=1)
        print(f"{k.reason[:70]}...\n    {tuple(sorted(set(bad[hit].case)))}")
        explained |= hit & bad.case.isin(k.cases)
    left = bad[~explained]
    print(f"\n{len(left)} rows no entry explains:")
    print(left.groupby(["backend", "impl", "op", "pass", "dtype"]).case.agg(lambda c: ",".join(sorted(set(c))))
          .to_string())


if __name__ == "__main__":
    main(sys.argv[1])
