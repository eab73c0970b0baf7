"""The speed decision of `compare` on synthetic run-level samples: the four outcomes, the exit codes, the
exactness of the permutation interval, drift between runs that must not be flagged, and unstable runs."""

from __future__ import annotations

import itertools
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.ab import schedule
from suite.compare import (
    Thresholds,
    interval_rank,
    min_runs,
    run_stability,
    speed_decision,
    u_null_cdf,
    unstable_warning,
)
from suite.store import Store
from suite.tests.helpers import suite_main

TH = Thresholds()


def runs(center: float, spread: float, n: int = 6, seed: int = 0) -> np.ndarray:
    return center * np.exp(spread * np.random.default_rng(seed).standard_normal(n))


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 3), (3, 3), (4, 2), (5, 5)])
def test_u_distribution_is_the_exact_permutation_distribution(m, n):
    """Every split of m + n distinct runs into the two sides, counted by U (pairs with new above base)."""
    values = np.arange(m + n)
    counts = np.zeros(m * n + 1)
    for base in itertools.combinations(values, m):
        new = np.setdiff1d(values, base)
        counts[sum(int(x > y) for x in new for y in base)] += 1
    assert np.allclose(u_null_cdf(m, n), np.cumsum(counts) / math.comb(m + n, m))


def test_false_alarm_rate_of_the_interval_is_at_most_alpha():
    """Runs of one build, however noisy, are flagged (either direction) at most alpha of the time."""
    rng = np.random.default_rng(1)
    flagged = sum(not speed_decision(rng.lognormal(0, 0.3, 6), rng.lognormal(0, 0.3, 6),
                                     Thresholds(min_effect=0.0, alpha=0.05)).change.startswith(("no", "inconcl"))
                  for _ in range(4000))
    exact = 2 * u_null_cdf(6, 6)[interval_rank(6, 6, 0.05) - 1]
    assert exact <= 0.05 and flagged / 4000 <= exact + 3 * math.sqrt(exact / 4000)


def test_the_four_outcomes():
    base = runs(1e-3, 0.01)
    slow, fast = speed_decision(base, base * 1.3, TH), speed_decision(base, runs(0.5e-3, 0.01, seed=1), TH)
    assert slow.change == "regression: 1.30x time" and 1 < slow.low < 1.3 < slow.high
    assert fast.change.startswith("improvement: ") and fast.ratio == pytest.approx(0.5, rel=0.03)
    same = speed_decision(base, runs(1e-3, 0.01, seed=1), TH)
    assert same.change == "no change" and 0.9 < same.low <= same.ratio <= same.high < 1.1
    few = speed_decision(base[:2], runs(2e-3, 0.01, n=2, seed=1), TH)
    assert few.change == f"inconclusive: too few runs (2+2; at alpha {TH.alpha:g} the exact test needs 6+6)"
    noisy = speed_decision(runs(1e-3, 0.2), runs(1.3e-3, 0.2, seed=1), TH)  # 30% slower, 20% run-to-run noise
    assert noisy.change.startswith("inconclusive: noise") and f"run-to-run noise {noisy.noise:.1%}" in noisy.change
    assert 0.1 < noisy.noise < 0.4


def test_a_significant_change_below_the_threshold_is_not_flagged():
    """Every new run 5% slower: a real change, confidently smaller than the 10% that counts."""
    d = speed_decision(runs(1e-3, 0.002), runs(1.05e-3, 0.002, seed=1), TH)
    assert d.low > 1 and d.high < 1.1 and d.change == "no change"
    straddles = speed_decision(runs(1e-3, 0.02), runs(1.08e-3, 0.02, seed=1), TH)  # could be 5% or 12%
    assert straddles.low < 1.1 < straddles.high and straddles.change.startswith("inconclusive: noise")


def test_min_runs_follows_alpha():
    assert min_runs(0.005) == 6 and min_runs(0.01) == 5 and min_runs(0.05) == 4
    assert interval_rank(5, 5, 0.005) is None and interval_rank(6, 6, 0.005) == 2


@pytest.mark.parametrize("drift", ["linear", "step", "one slow run each"])
def test_drift_between_runs_is_not_flagged(drift):
    """The machine slows down over the protocol (A B B A ... order): both sides see it, nothing is flagged,
    although the drift is 30% and the rounds inside each run agree to 0.1%."""
    order = schedule(["A", "B"], 6)
    pos = np.arange(len(order))
    factor = {"linear": 1 + 0.3 * pos / pos[-1], "step": np.where(pos >= 6, 1.3, 1.0),
              "one slow run each": np.where(np.isin(pos, [1, 7]), 1.3, 1.0)}[drift]
    times = {arm: [1e-3 * f for (a, _), f in zip(order, factor, strict=True) if a == arm] for arm in "AB"}
    d = speed_decision(times["A"], times["B"], TH)
    assert not d.change.startswith(("regression", "improvement")), d


def test_schedule_alternates_abba():
    assert schedule(["A", "B"], 4) == [("A", 1), ("B", 1), ("B", 2), ("A", 2), ("A", 3), ("B", 3), ("B", 4),
                                       ("A", 4)]
    assert [a for a, _ in schedule(["A", "B", "S"], 2)] == ["A", "B", "S", "S", "B", "A"]


def test_a_run_whose_copy_bandwidth_moved_is_unstable():
    rows = pd.DataFrame({"run_id": ["r1", "r1", "r2", "old"], "copy_gbps": [20.0, 20.0, 20.0, 20.0],
                         "copy_gbps_end": [20.5, 20.5, 16.0, np.nan]})
    st = run_stability(rows, 0.10)
    assert st.set_index("run_id").unstable.to_dict() == {"r1": False, "r2": True}  # "old": no second measurement
    text = unstable_warning(st, 0.10)
    assert text.startswith("WARNING: the benchmark result may be unstable")
    assert "run r2: copy bandwidth moved by -20.0% during the run (20.0 -> 16.0 GB/s; limit 10%)" in text


# --- end to end: a protocol's runs in a store, judged by `python -m suite compare` ----------------------

def _timing(protocol: str, arm: str, k: int, median: float, copy_end: float = 20.0) -> pd.DataFrame:
    s = median * (1 + 0.001 * np.random.default_rng(k).standard_normal(10))
    return pd.DataFrame({"backend": "torch", "backend_version": "2.13.0", "device": "cpu", "dtype": "float32",
                         "op": "softmax", "impl": ["fused", "naive"], "pass": "forward", "batch": 64,
                         "vocab": 4096, "median_s": [median, median], "samples": [list(s), list(s)],
                         "copy_gbps": 20.0, "copy_gbps_end": copy_end})


def _protocol_store(tmp_path, new_factor: float, n: int = 6, unstable: bool = False) -> Path:
    st = Store(tmp_path / "store")
    for arm, k in schedule(["A", "B"], n):
        median = 1e-3 * (1 + 0.02 * k) * (new_factor if arm == "B" else 1.0)  # drift + the change
        end = 15.0 if unstable and (arm, k) == ("B", 2) else 20.0
        st.write_table("timing", _timing("ab-x", arm, k, median, end), f"ab-x-{arm}-{k:02d}")
    return tmp_path / "store"


def _compare(store: Path, *args: str) -> subprocess.CompletedProcess:
    return suite_main("compare", "ab-x:A", "ab-x:B", "--store", str(store), *args)


@pytest.mark.parametrize(("factor", "n", "code", "outcome"), [
    (1.3, 6, 1, "regression"), (0.5, 6, 0, "improvement"), (1.0, 6, 0, "no change"), (1.3, 3, 0, "inconclusive")])
def test_exit_status_1_only_on_a_confident_regression(tmp_path, factor, n, code, outcome):
    p = _compare(_protocol_store(tmp_path, factor, n), "--out", str(tmp_path / "c.md"))
    assert p.returncode == code, p.stdout + p.stderr
    csv = pd.read_csv(tmp_path / "c.csv")
    assert (csv.change.str.split(":").str[0] == outcome).all() and len(csv) == 2
    assert csv.noise.notna().all() and "noise floor" in p.stdout
    if outcome == "inconclusive":
        assert "too few runs" in p.stdout


def test_an_unstable_run_is_reported(tmp_path):
    p = _compare(_protocol_store(tmp_path, 1.0, unstable=True), "--out", str(tmp_path / "c.md"))
    assert p.returncode == 0
    assert "WARNING: the benchmark result may be unstable" in p.stdout and "run ab-x-B-02" in p.stdout


def test_report_versions_table_shows_the_four_outcomes_and_the_noise():
    """The published Versions table counts the outcomes, with noise; two runs of drift are not regressions."""
    from suite.report import Data, versions

    frames = []
    for version, factor, n in (("1.0", 1.0, 6), ("1.1", 1.3, 6), ("1.2", 1.3 * 1.5, 2)):
        for k in range(1, n + 1):
            t = _timing("x", "A", k, 1e-3 * factor * (1 + 0.01 * k)).assign(backend_version=version,
                                                                             run_id=f"r-{version}-{k}")
            frames.append(t)
    timing = pd.concat(frames, ignore_index=True)
    acc = pd.DataFrame(columns=["backend", "device", "backend_version", "dtype", "op", "impl", "case", "pass",
                                "verdict", "ulp_err_scaled", "run_id"])
    table = versions(Data(acc, timing, raw={"accuracy": acc, "timing": timing})).set_index("new")
    assert table.loc["1.1", "speed regressions"] == 2 and table.loc["1.1", "timing runs"] == "6+6"
    assert table.loc["1.2", "speed regressions"] == 0 and table.loc["1.2", "speed inconclusive"] == 2
    assert {"speed improvements", "speed no change"} <= set(table.columns)
    assert table.loc["1.1", "run-to-run noise"].endswith("%")
