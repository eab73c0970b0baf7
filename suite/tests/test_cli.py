"""`python -m suite` end to end (its `main` in this process; `list` also in a real subprocess): usage
errors exit 2 with the valid choices and no traceback, bad case files write nothing, a good run writes
the table and env.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.tests.helpers import suite_main

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["backend", "backend_version", "device", "dtype", "op", "impl", "case", "pass",
           "max_abs_err", "max_rel_err", "max_ulp_err", "n_nonfinite", "verdict", "message"]
ENV_KEYS = ["python", "numpy", "frameworks", "cpu_model", "git_commit", "utc_time", "command", "threads"]


def suite(*args: str) -> subprocess.CompletedProcess:
    return suite_main(*args)


def run_small(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return suite("run", "--backends", "numpy", "--dtypes", "float32", "--store", str(out), "--no-progress",
                 *extra)


def assert_usage_error(p: subprocess.CompletedProcess, *mentions: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    for m in mentions:
        assert m in p.stderr, (m, p.stderr)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def read_store(out: Path) -> pd.DataFrame:
    """The store's accuracy table as one hive-partitioned dataset, as a user would read it."""
    return pd.read_parquet(out / "accuracy")


# --- unknown names -------------------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "bad", "valid"), [
    ("--backends", "nosuchframework", ["numpy", "torch", "tensorflow", "jax"]),
    ("--dtypes", "float8", ["float16", "bfloat16", "float32", "float64"]),
    ("--ops", "softmaxx", ["softmax", "log_softmax", "logsumexp", "cross_entropy"]),
    ("--impls", "clever", ["naive", "shifted", "shifted_log1p", "fused"]),
    ("--passes", "sideways", ["forward", "backward"]),
    ("--devices", "tpu", ["cpu", "gpu"]),
    ("--cases", "no_such_case", ["seed000_batch", "seed004_vec"]),
    ("--cases", "no-such-tag", ["overflow", "large-vocab", "mask"]),
])
def test_unknown_name_is_a_usage_error(tmp_path, flag, bad, valid):
    out = tmp_path / "out"
    args = ["--backends", "numpy", "--dtypes", "float32", "--cases", "seed004_vec"]
    i = args.index(flag) if flag in args else None
    if i is not None:
        args[i + 1] = bad
    else:
        args += [flag, bad]
    p = suite("run", *args, "--store", str(out), "--no-progress")
    assert_usage_error(p, bad, *valid)
    assert_nothing_written(out)


def test_one_bad_name_among_good_ones(tmp_path):
    p = run_small(tmp_path / "out", "--ops", "softmax,bogus_op", "--cases", "seed004_vec")
    assert_usage_error(p, "bogus_op", "log_softmax")


# --- malformed case files ------------------------------------------------------------------------

def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    files = {}
    f = d / "not_npz.npz"
    f.write_text("these are not the logits you are looking for\n")
    files["not an npz"] = (f, "not_npz.npz")
    f = d / "no_logits.npz"
    np.savez(f, scores=np.zeros((2, 3)))
    files["no logits"] = (f, "logits")
    f = d / "targets_shape.npz"
    np.savez(f, logits=np.zeros((2, 3)), targets=np.array([0, 1, 2]))
    files["targets of wrong shape"] = (f, "targets")
    f = d / "targets_range.npz"
    np.savez(f, logits=np.zeros((2, 3)), targets=np.array([0, 3]))
    files["targets out of range"] = (f, "targets")
    f = d / "targets_negative.npz"
    np.savez(f, logits=np.zeros((2, 3)), targets=np.array([-1, 0]))
    files["negative targets"] = (f, "targets")
    f = d / "targets_float.npz"
    np.savez(f, logits=np.zeros((2, 3)), targets=np.array([0.0, 1.0]))
    files["float targets"] = (f, "targets")
    f = d / "temp_zero.npz"
    np.savez(f, logits=np.zeros((2, 3)), temperature=np.array(0.0))
    files["temperature 0"] = (f, "temperature")
    f = d / "temp_negative.npz"
    np.savez(f, logits=np.zeros((2, 3)), temperature=np.array(-1.5))
    files["temperature < 0"] = (f, "temperature")
    f = d / "temp_nan.npz"
    np.savez(f, logits=np.zeros((2, 3)), temperature=np.array(np.nan))
    files["temperature NaN"] = (f, "temperature")
    f = d / "empty_classes.npz"
    np.savez(f, logits=np.zeros((2, 0)))
    files["no classes"] = (f, "logits")
    return files


BAD_KINDS = ["not an npz", "no logits", "targets of wrong shape", "targets out of range", "negative targets",
             "float targets", "temperature 0", "temperature < 0", "temperature NaN", "no classes"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_malformed_case_file(tmp_path, kind):
    path, mention = _bad_files(tmp_path)[kind]
    out = tmp_path / "out"
    p = run_small(out, "--case-file", str(path))
    assert_usage_error(p, mention)
    assert_nothing_written(out)


def test_missing_case_file(tmp_path):
    out = tmp_path / "out"
    p = run_small(out, "--case-file", str(tmp_path / "nowhere.npz"))
    assert_usage_error(p, "nowhere.npz")
    assert_nothing_written(out)


# --- a good run ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    f = d / "mylogits.npz"
    rng = np.random.default_rng(0)
    np.savez(f, logits=rng.normal(0, 3, (3, 7)), targets=np.array([0, 6, 3]), temperature=np.array(0.5))
    out = d / "out"
    p = run_small(out, "--case-file", str(f))
    return f, out, p


def test_case_file_run_succeeds(user_run):
    _, out, p = user_run
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) == 2, files  # one partition file and the run's env
    assert files[0].startswith("accuracy/backend=numpy/backend_version=") and "/device=cpu/" in files[0]
    assert files[1].startswith("runs/") and files[1].endswith("/accuracy.json")


def test_case_file_table(user_run):
    f, out, _ = user_run
    df = read_store(out)
    missing = [c for c in COLUMNS if c not in df.columns]
    assert not missing, missing
    assert set(df["case"]) == {f.stem}  # only the user's case: no catalog cases by default
    assert set(df["backend"]) == {"numpy"}
    assert set(df["dtype"]) == {"float32"}
    assert set(df["device"]) == {"cpu"}
    assert set(df["pass"]) == {"forward", "backward"}
    assert len(df) == len(df.drop_duplicates(["op", "impl", "pass"]))
    assert set(df["verdict"]) <= {"ok", "inaccurate", "nonfinite", "error", "unsupported"}
    # stable implementations on ordinary logits grade ok
    stable = df[df["impl"].isin(["shifted", "shifted_log1p"])]
    assert (stable["verdict"] == "ok").all(), stable[["op", "impl", "pass", "verdict", "message"]]
    assert df["run_id"].nunique() == 1


def test_case_file_env(user_run):
    _, out, _ = user_run
    (path,) = (out / "runs").glob("*/accuracy.json")
    env = json.loads(path.read_text())
    missing = [k for k in ENV_KEYS if k not in env]
    assert not missing, missing
    assert "numpy" in env["frameworks"]
    assert env["numpy"] == np.__version__
    assert isinstance(env["command"], list) and "--case-file" in env["command"]


def test_case_file_plus_catalog_case(tmp_path):
    f = tmp_path / "extra.npz"
    np.savez(f, logits=np.array([[0.0, 1.0, 2.0], [5.0, -5.0, 0.5]]))
    out = tmp_path / "out"
    p = run_small(out, "--case-file", str(f), "--cases", "seed004_vec", "--ops", "softmax")
    assert p.returncode == 0, p.stderr
    df = read_store(out)
    assert set(df["case"]) == {"extra", "seed004_vec"}
    assert set(df["op"]) == {"softmax"}


def test_case_file_name_clash(tmp_path):
    f = tmp_path / "seed004_vec.npz"
    np.savez(f, logits=np.array([1.0, 2.0]))
    out = tmp_path / "out"
    p = run_small(out, "--case-file", str(f), "--cases", "seed004_vec")
    assert_usage_error(p, "several cases are named")
    assert_nothing_written(out)


def test_tag_selection_runs(tmp_path):
    out = tmp_path / "out"
    p = run_small(out, "--cases", "log1p", "--impls", "shifted_log1p", "--passes", "forward")
    assert p.returncode == 0, p.stderr
    df = read_store(out)
    assert set(df["case"]) == {"log1p_tiny_rest", "log1p_dominant_rows", "ties_at_max_small"}


# --- list ----------------------------------------------------------------------------------------

def test_list_cases():
    """The real console entry, in a fresh interpreter."""
    p = subprocess.run([sys.executable, "-m", "suite", "list"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "seed000_batch" in p.stdout
    assert "seed004_vec" in p.stdout


@pytest.mark.parametrize(("what", "mention"), [("backends", "numpy"), ("tags", "large-vocab")])
def test_list_other(what, mention):
    p = suite("list", what)
    assert p.returncode == 0, p.stderr
    assert mention in p.stdout
