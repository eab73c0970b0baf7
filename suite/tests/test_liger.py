"""The Liger-Kernel plug-in (examples/plugins/liger.py) through the suite without a GPU: Triton's interpreter
(TRITON_INTERPRET=1) runs Liger's kernels on CPU tensors. Liger's cross-entropy writes its gradient into its
input; the suite must show that as the row's `mutates_input` verdict, and the rows of the other
implementations in the same run must be exactly what they are in a run without Liger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from suite.tests.helpers import _fresh_plugin_registry, installed, suite_main

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugins" / "liger.py"
OPS = "softmax,cross_entropy,cross_entropy_mean"  # what Liger defines (the rest are `unsupported` rows)
MISSING = [m for m in ("torch", "triton", "liger_kernel") if not installed(m)]

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} "
                                "(pip install -e '.[gpu-kernels]')")
_fresh_registry = pytest.fixture(autouse=True)(_fresh_plugin_registry)


def _rows(store: Path) -> pd.DataFrame:
    return pd.read_parquet(store / "accuracy").set_index(["impl", "op", "pass", "dtype", "case"]).sort_index()


@pytest.fixture(scope="module")
def with_liger(tmp_path_factory) -> pd.DataFrame:
    """The seed cases, every dtype, Liger and `fused` in one run, in a fresh interpreter: Triton picks the
    interpreter when Liger's kernels are defined, so the variable must be set before anything imports it."""
    store = tmp_path_factory.mktemp("liger") / "store"
    p = subprocess.run([sys.executable, "-m", "suite", "run", "--plugin", str(PLUGIN), "--cases", "seed",
                        "--backends", "torch", "--devices", "cpu", "--ops", OPS, "--impls", "liger,fused",
                        "--store", str(store), "--jobs", "1", "--no-progress"],
                       cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return _rows(store)


def test_liger_rows_are_graded(with_liger):
    liger = with_liger.loc["liger"]
    assert len(liger) == 3 * 2 * 4 * 18  # ops x passes x dtypes x seed cases
    assert not liger.verdict.isin(["error", "unsupported"]).any(), liger.message.dropna().unique()[:5]
    fwd = liger.xs("forward", level="pass")
    assert (fwd.verdict == "ok").mean() > 0.7, fwd.verdict.value_counts()


def test_cross_entropy_gradient_written_into_input_is_the_rows_verdict(with_liger):
    liger = with_liger.loc["liger"]
    ce = liger.loc[["cross_entropy", "cross_entropy_mean"]]
    back = ce.xs("backward", level="pass")
    assert (back.verdict == "mutates_input").all(), back.verdict.value_counts()
    assert back.message.str.startswith("wrote into its input x; its outputs alone: ").all()
    # the forward call is handed an x that does not require grad: Liger writes nothing there
    assert not ce.xs("forward", level="pass").verdict.eq("mutates_input").any()
    assert not liger.loc["softmax"].verdict.eq("mutates_input").any()


def test_other_implementations_in_the_same_run_are_untouched(with_liger, tmp_path):
    p = suite_main("run", "--cases", "seed", "--backends", "torch", "--devices", "cpu", "--ops", OPS,
                   "--impls", "fused", "--store", str(tmp_path / "store"), "--jobs", "1", "--no-progress")
    assert p.returncode == 0, p.stderr
    alone = _rows(tmp_path / "store").loc["fused"]
    beside = with_liger.loc["fused"]
    assert not beside.verdict.eq("mutates_input").any()
    pd.testing.assert_series_equal(beside.verdict, alone.verdict)
    pd.testing.assert_series_equal(beside.max_ulp_err, alone.max_ulp_err)
