"""`python -m suite compare`: verdict and ULP regressions, exit status 1 on a regression (so CI can gate on
it), 2 on a bad selector; the speed decision itself is tested in test_speed_decision.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.compare import accuracy_change
from suite.store import Store
from suite.tests.helpers import suite_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("vb", "vn", "eb", "en", "kind"), [
    ("ok", "nonfinite", 0.5, np.nan, "regression"),
    ("ok", "inaccurate", 3.0, 90.0, "regression"),
    ("nonfinite", "ok", np.nan, 0.5, "improvement"),
    ("error", "unsupported", np.nan, np.nan, "same"),
    ("ok", "ok", 0.2, 0.9, "same"),  # both below 1 ULP: last-bit noise is not a regression
    ("ok", "ok", 2.0, 4.0, "same"),  # exactly the factor: not past it
    ("ok", "ok", 2.0, 4.5, "regression"),
    ("inaccurate", "inaccurate", 1e3, 1e2, "improvement"),
])
def test_accuracy_change(vb, vn, eb, en, kind):
    assert accuracy_change(vb, vn, eb, en, 2.0).startswith(kind)


def _samples(median: float, spread: float, n: int = 30, seed: int = 0) -> np.ndarray:
    return median * (1 + spread * np.random.default_rng(seed).standard_normal(n))


def _acc(version: str, verdicts: list[str], errs: list[float]) -> pd.DataFrame:
    n = len(verdicts)
    return pd.DataFrame({"backend": "jax", "backend_version": version, "device": "cpu", "dtype": "float32",
                         "op": "softmax", "impl": "naive", "pass": "forward", "case": [f"c{i}" for i in range(n)],
                         "verdict": verdicts, "ulp_err_scaled": errs})


def _tim(version: str, median: float, seed: int) -> pd.DataFrame:
    s = _samples(median, 0.01, 20, seed)
    return pd.DataFrame({"backend": "jax", "backend_version": version, "device": "cpu", "dtype": "float32",
                         "op": "softmax", "impl": "fused", "pass": "forward", "batch": [64], "vocab": [4096],
                         "median_s": [float(np.median(s))], "samples": [list(s)]})


@pytest.fixture
def store(tmp_path) -> Path:
    st = Store(tmp_path / "store")
    st.write_table("accuracy", _acc("0.1", ["ok", "ok", "nonfinite"], [0.5, 2.0, np.nan]), "20260101T000000Z-a")
    st.write_table("accuracy", _acc("0.2", ["nonfinite", "ok", "ok"], [np.nan, 1.5, 0.5]), "20260102T000000Z-b")
    st.write_table("timing", _tim("0.1", 1e-3, 0), "20260101T000000Z-a")
    st.write_table("timing", _tim("0.2", 1.5e-3, 1), "20260102T000000Z-b")
    return tmp_path / "store"


def compare(store: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m suite compare ...` (its `main`, in this process)."""
    return suite_main("compare", *args, "--store", str(store))


def test_regression_exits_1_and_writes_markdown_and_csv(store, tmp_path):
    """In a real process: the exit status CI gates on."""
    out = tmp_path / "cmp.md"
    p = subprocess.run([sys.executable, "-m", "suite", "compare", "jax==0.1", "jax==0.2", "--out", str(out),
                        "--store", str(store)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    md = out.read_text()
    assert "REGRESSIONS FOUND" in md and "ok -> nonfinite" in md and "nonfinite -> ok" in md
    assert "inconclusive: too few runs (1+1" in md  # one timing run per side proves nothing about speed
    assert "| accuracy |          3 |             1 |              1 |           1 |              0 |" in md
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert set(csv.table) == {"accuracy", "speed"} and len(csv) == 3  # 2 changed accuracy rows + 1 timing
    assert "REGRESSIONS FOUND" in p.stdout  # the terminal gets the same tables


def test_no_regression_exits_0(store, tmp_path):
    p = compare(store, "jax==0.2", "jax==0.2", "--out", str(tmp_path / "same.md"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no regression" in (tmp_path / "same.md").read_text()


def test_run_id_prefix_selects_a_run(store, tmp_path):
    p = compare(store, "20260101", "20260102", "--out", str(tmp_path / "r.md"))
    assert p.returncode == 1 and "ok -> nonfinite" in p.stdout


def test_default_output_is_in_the_store(store):
    p = compare(store, "jax==0.1", "jax==0.2")
    assert p.returncode == 1
    assert (store / "comparisons" / "jax_0.1_vs_jax_0.2.md").is_file()


@pytest.mark.parametrize(("args", "mention"), [
    (["jax==9.9", "jax==0.2"], "jax==0.1"),  # lists the valid selectors
    (["nosuchrun", "jax==0.2"], "matches nothing"),
    (["2026", "jax==0.2"], "ambiguous"),
    (["jax==0.1", "jax==0.2", "--ulp-factor", "0.5"], "--ulp-factor"),
    (["jax==0.1", "jax==0.2", "--alpha", "2"], "--alpha"),
])
def test_bad_selector_exits_2(store, args, mention):
    p = compare(store, *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr and mention in p.stderr, p.stderr


def test_missing_store_exits_2(tmp_path):
    p = compare(tmp_path / "nowhere", "a", "b")
    assert p.returncode == 2 and "not a directory" in p.stderr


def test_timing_runs_of_one_selector_are_pooled():
    from suite.compare import pool_timings

    a, b = _tim("0.1", 1e-3, 0), _tim("0.1", 2e-3, 1)
    df = pd.concat([a.assign(run_id="r1"), b.assign(run_id="r2")], ignore_index=True)
    pooled = pool_timings(df)
    assert len(pooled) == 1 and pooled.n_runs[0] == 2 and pooled.run_id[0] == "r1,r2"
    assert len(pooled.samples[0]) == 40
    assert pooled.median_s[0] == pytest.approx(np.median([*a.samples[0], *b.samples[0]]))
