"""Memory per case value (docs/memory.md): a run's peak stays within the model of suite/memory.py, the
block-wise reference and scoring give the rows that whole arrays give, and a run that would not fit is
refused before anything is computed or written."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cases import Case
from suite import memory, reference
from suite.dtypes import DTYPES, round_to
from suite.ops import IMPLS, OPS, PASSES
from suite.reference import LD, Expected, round_pair
from suite.tests.helpers import one_line_error, suite_main

ROOT = Path(__file__).resolve().parents[2]
# a child process runs the command and reports the largest peak resident set of its process tree (the CLI and
# its workers are its descendants: RUSAGE_CHILDREN keeps the largest of those waited for)
PEAK = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(p.stderr)
print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def test_a_wide_run_stays_within_the_memory_model(tmp_path):
    """2^21 values (16 x 131,072 float64), float64 (the widest inputs), every op, impl and pass in one worker:
    the largest process stays under the model's worker bound (~176 bytes a value + fixed). Before block-wise
    references and scoring this run needed ~700 bytes a value (~1.6 GiB)."""
    rows, n = 16, 131_072
    f = tmp_path / "wide.npz"
    np.savez(f, logits=np.random.default_rng(0).standard_normal((rows, n)) * 8)
    cmd = [sys.executable, "-m", "suite", "run", "--case-file", str(f), "--backends", "numpy", "--dtypes",
           "float64", "--jobs", "1", "--store", str(tmp_path / "s"), "--no-progress", "--no-entry-points"]
    p = subprocess.run([sys.executable, "-c", PEAK, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       check=False)
    rc, peak = map(int, p.stdout.split())
    assert rc == 0, p.stderr[-2000:]
    values = rows * n
    bound = memory.worker_bytes(values, values)
    assert peak <= bound, f"peak {peak / 2**20:.0f} MiB > model {bound / 2**20:.0f} MiB"
    assert (peak - memory.WORKER_FIXED) / values < 300  # far below the ~700 bytes a value it took before


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows).sort_values(["dtype", "op", "impl", "pass"]).reset_index(drop=True)


def test_blocks_give_the_rows_whole_arrays_give(monkeypatch):
    """The same case graded with its reference computed and scored in blocks of a few rows (a wide case's
    path: files, one (op, pass) held) and whole (a small case's): every row identical, NaN rows, masked rows,
    +inf logits, probability targets and T != 1 included."""
    from suite.runner import Plan, run_slice

    rng = np.random.default_rng(3)
    z = rng.standard_normal((7, 3, 40)) * 20
    z[0, 1, 4], z[1, 0, :], z[2, 2, 7], z[3, 1, ::2], z[4, 0, 9] = np.nan, -np.inf, np.inf, -np.inf, 900.0
    p = rng.random(z.shape)
    p[..., ::3] = 0
    case = Case("blocks", "odd rows", z, probs=p / p.sum(-1, keepdims=True), temperature=0.7,
                targets=rng.integers(0, 40, z.shape[:-1]))
    plan = Plan(["numpy"], ["cpu"], list(DTYPES), list(OPS), list(IMPLS), list(PASSES), cases=[case], threads=1)
    whole, _ = run_slice(plan, list(DTYPES))
    monkeypatch.setattr(reference, "CHUNK_VALUES", 80)  # blocks of 2 rows; a wide table: files, one at a time
    blocked, _ = run_slice(plan, list(DTYPES))
    a, b = _frame(whole), _frame(blocked)
    assert len(a) == len(OPS) * len(PASSES) * len(IMPLS) * len(DTYPES)
    assert a.drop(columns="compile_s").equals(b.drop(columns="compile_s"))


def test_a_wide_reference_holds_one_expected_at_a_time(monkeypatch):
    monkeypatch.setattr(reference, "CHUNK_VALUES", 64)
    ref = reference.compute_reference(Case("w", "wide", np.random.default_rng(1).standard_normal((9, 50))), "float32")
    ref.expected[("softmax", "forward")]
    e = ref.expected[("log_softmax", "backward")]
    assert list(ref.expected.held.items) == [("e", "log_softmax", "backward")]
    assert e.value is None and e.hi.shape == (9, 50)  # held as hi + lo + unit: 24 bytes a value


@pytest.mark.parametrize("name", DTYPES)
def test_rounding_the_split_value_is_rounding_the_long_double(name):
    """round_pair(hi, lo) (what scoring a wide reference uses) == round_to(long double), ties included:
    values just above and below the dtype's midpoints, overflow, subnormals, zeros, inf and NaN."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(50_000) * 10.0 ** rng.integers(-45, 40, 50_000)
    with np.errstate(all="ignore"):
        r = round_to(base, name)
        up = round_to(np.nextafter(r, np.inf) + np.abs(r) * 2.0**-5, name)  # a value above, in the dtype
        mids = ((r + up) / 2)[:5000].astype(LD)
        v = np.concatenate([base.astype(LD), mids, mids * (1 + LD(2) ** -60), mids * (1 - LD(2) ** -60),
                            np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-310, -1e-320, 65519.99, 65520.0,
                                      3.4028235677973366e38, 3.3895313892515355e38, 1e39], dtype=LD)])
        e = Expected(v, np.ones(v.shape), name, 1.0)
        a, b = round_to(v, name), round_pair(e.hi, e.lo, name)
    assert np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))


def test_the_model_refuses_what_does_not_fit_and_says_what_would():
    gib = 2**30
    assert memory.refusal([2**20] * 80, workers=2, available=8 * gib) is None  # the catalog-sized run fits
    why = memory.refusal([2**25], workers=2, available=8 * gib, jobs_given=False)
    assert why and "33,554,432 values" in why and "8.0 GiB available" in why and "use fewer rows" in why
    fit = memory.fitting_values(8 * gib, 2)
    assert memory.run_bytes(fit, fit, 2) <= memory.HEADROOM * 8 * gib < memory.run_bytes(fit + 1, fit + 1, 2)


def _declared(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose header declares `shape` float64 with (almost) no data behind it."""
    from numpy.lib import format as npf

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("logits.npy", "w", force_zip64=True) as f:
        npf.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 2**16)


def test_a_case_file_over_the_machine_is_refused_from_its_header(tmp_path):
    """More values than one worker fits in the memory available: refused before decompressing anything."""
    f = tmp_path / "huge.npz"
    _declared(f, (2**16, 2**20))  # 2^36 values: ~11 TiB at the model's bytes a value
    p = suite_main("run", "--backends", "numpy", "--case-file", str(f), "--store", str(tmp_path / "s"))
    one_line_error(p, 2, "68,719,476,736 values", "the limit is", "bytes a value", "use fewer rows")
    assert not (tmp_path / "s").exists()


def test_a_run_over_the_memory_with_its_workers_is_refused_before_computing(tmp_path, monkeypatch):
    """A file one worker fits, at a --jobs that does not: exit 2, one line with the numbers and `--jobs 1`,
    nothing written."""
    values = 2**20
    available = int(memory.run_bytes(values, values, 2) / memory.HEADROOM) - 2**20  # just too little for two
    assert memory.run_bytes(values, values, 1) <= memory.HEADROOM * available
    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    f = tmp_path / "mid.npz"
    np.savez(f, logits=np.zeros((8, values // 8)))
    p = suite_main("run", "--backends", "numpy", "--case-file", str(f), "--jobs", "2", "--store", str(tmp_path / "s"))
    line = one_line_error(p, 2, "1,048,576 values", "2 workers", f"{available / 2**30:.1f} GiB available",
                          "or --jobs 1")
    assert "with --jobs 1" in line
    assert not (tmp_path / "s").exists()
