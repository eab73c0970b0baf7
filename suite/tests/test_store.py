"""The result store: hive partitions readable with no code of ours, atomic files, partitions that
survive a kill, corrupt or foreign files skipped by path, shards that merge into the unsharded run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from suite.selection import UsageError
from suite.store import PARTITIONS, Shard, Store, check_run_id, new_run_id
from suite.tests.helpers import suite_main

ROOT = Path(__file__).resolve().parents[2]
KEY = ["backend", "backend_version", "device", "dtype", "op", "impl", "case", "pass"]


def table(backend="numpy", version="1.0", device="cpu", n=4, verdict="ok") -> pd.DataFrame:
    return pd.DataFrame({"backend": backend, "backend_version": version, "device": device,
                         "dtype": "float32", "op": "softmax", "impl": "naive", "pass": "forward",
                         "case": [f"c{i}" for i in range(n)], "verdict": verdict,
                         "ulp_err_scaled": np.arange(n, dtype=float)})


def suite(*args: str) -> subprocess.CompletedProcess:
    """`python -m suite ...` (its `main`, in this process; the killed run below is a real process)."""
    return suite_main(*args)


def test_partitions_read_as_one_dataset_by_pandas_and_pyarrow(tmp_path):
    store = Store(tmp_path)
    paths = store.write_table("accuracy", pd.concat([table("numpy", "2.0"), table("jax", "0.9.2"),
                                                     table("jax", "0.10.2", "gpu")]), "r1")
    assert {p.relative_to(tmp_path).parts[1:4] for p in paths} == {
        ("backend=numpy", "backend_version=2.0", "device=cpu"), ("backend=jax", "backend_version=0.9.2", "device=cpu"),
        ("backend=jax", "backend_version=0.10.2", "device=gpu")}
    via_pandas = pd.read_parquet(tmp_path / "accuracy")
    via_arrow = ds.dataset(tmp_path / "accuracy", partitioning="hive").to_table().to_pandas()
    for df in (via_pandas, via_arrow):
        assert len(df) == 12 and set(df.run_id) == {"r1"}
        assert set(df.backend.astype(str)) == {"numpy", "jax"}
        assert set(df.backend_version.astype(str)) == {"2.0", "0.9.2", "0.10.2"}
    ours = store.load("accuracy")
    assert list(ours.columns[:3]) == list(PARTITIONS) and len(ours) == 12


def test_duckdb_reads_the_store(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (optional)")
    Store(tmp_path).write_table("accuracy", table("torch", "2.13.0+cpu"), "r1")
    con = duckdb.connect()
    rows = con.execute(f"select backend, count(*) from read_parquet('{tmp_path}/accuracy/**/*.parquet', "
                       "hive_partitioning=true) where backend_version = '2.13.0+cpu' group by backend").fetchall()
    assert rows == [("torch", 4)]


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.write_table("accuracy", table(), "good")

    def broken(self, path, **kw):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        store.write_table("accuracy", table(), "bad")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["good.parquet"], files  # no torn file, no leftover temporary


def test_killed_run_keeps_its_finished_partitions(tmp_path):
    """numpy's partition is renamed into place before torch starts; SIGKILL during torch leaves it whole
    (one worker takes the last selected backend first: see suite/workers.make_tasks)."""
    pytest.importorskip("torch")
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "suite", "run", "--backends", "torch,numpy", "--jobs", "1",
                             "--dtypes", "float32", "--cases", "seed,large-vocab", "--store", str(store),
                             "--run-id", "killed", "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    numpy_dir = store / "accuracy" / "backend=numpy"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not list(numpy_dir.rglob("killed.parquet")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(numpy_dir.rglob("killed.parquet")), "numpy's partition never appeared"
    df = pd.read_parquet(store / "accuracy")  # kept whole on disk
    assert set(df.backend) == {"numpy"} and (df.verdict.notna()).all() and len(df) > 0
    problems: list[str] = []
    assert Store(store).load("accuracy", problems).empty  # but the suite's readers say the run is incomplete
    assert len(problems) == 1 and "run killed (accuracy) is incomplete" in problems[0], problems
    assert "killed or crashed" in problems[0]
    visible = [p for p in store.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert all(p.suffix == ".parquet" or p.name == "accuracy.json" for p in visible), visible  # nothing torn


def test_corrupt_and_foreign_files_are_reported_and_skipped(tmp_path):
    store = Store(tmp_path)
    [good] = store.write_table("accuracy", table(), "r1")
    part = good.parent
    (part / "truncated.parquet").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (part / "notes.txt").write_text("hello")
    pd.DataFrame({"x": [1]}).to_parquet(part / "other.parquet")
    (tmp_path / "accuracy" / "loose.parquet").write_bytes(good.read_bytes())
    problems: list[str] = []
    df = store.load("accuracy", problems)
    assert len(df) == 4 and set(df.run_id) == {"r1"}
    text = "\n".join(problems)
    assert len(problems) == 4, text
    for name, why in (("truncated.parquet", "unreadable"), ("notes.txt", "foreign"), ("other.parquet", "no column"),
                      ("loose.parquet", "foreign")):
        assert any(name in p and why in p for p in problems), (name, text)


def test_empty_store_loads_empty(tmp_path):
    assert Store(tmp_path).load("timing").empty


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_bad_shard_is_a_usage_error(text):
    with pytest.raises(UsageError, match="i/n"):
        Shard.parse(text)


def test_shards_partition_the_work():
    items = list(range(11))
    parts = [Shard.parse(f"{i}/4").take(items) for i in range(1, 5)]
    assert sorted(x for p in parts for x in p) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert Shard.parse(None).take(items) == items


def test_run_ids():
    a, b = new_run_id(), new_run_id()
    assert a != b and check_run_id(a) == a
    for bad in ("", "../x", "a b", "x.shard-1-of-2"):
        with pytest.raises(UsageError):
            check_run_id(bad)


def test_sharded_run_merges_into_the_unsharded_run(tmp_path):
    common = ["--backends", "numpy", "--dtypes", "float16,float32", "--cases", "seed,mask", "--jobs", "1",
              "--no-progress"]
    whole = suite("run", *common, "--store", str(tmp_path / "whole"), "--run-id", "w")
    assert whole.returncode == 0, whole.stderr
    for i in (1, 2, 3):
        p = suite("run", *common, "--store", str(tmp_path / "merged"), "--run-id", "s", "--shard", f"{i}/3")
        assert p.returncode == 0, p.stderr
    files = sorted(p.name for p in (tmp_path / "merged" / "accuracy").rglob("*.parquet"))
    assert files == [f"s.shard-{i}-of-3.parquet" for i in (1, 2, 3)]
    a = Store(tmp_path / "whole").load("accuracy").drop(columns="run_id").sort_values(KEY).reset_index(drop=True)
    b = Store(tmp_path / "merged").load("accuracy").drop(columns="run_id").sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_sharded_bench_covers_the_sweep_once(tmp_path):
    common = ["--backends", "numpy", "--dtypes", "float32", "--ops", "softmax,logsumexp", "--impls", "fused,naive",
              "--sizes", "4x16,8x32", "--min-time", "0.001", "--store", str(tmp_path), "--run-id", "b",
              "--no-progress"]
    for i in (1, 2):
        p = suite("bench", *common, "--shard", f"{i}/2")
        assert p.returncode == 0, p.stderr
    df = Store(tmp_path).load("timing")
    assert len(df) == 16 and not df.duplicated(["op", "impl", "pass", "batch", "vocab"]).any()


@pytest.mark.parametrize("args", [["--shard", "3/2"], ["--run-id", "no/slashes"], ["--shard", "9/9"]])
def test_store_options_bad_input_exits_2(tmp_path, args):
    p = suite("run", "--backends", "numpy", "--dtypes", "float32", "--cases", "seed004_vec",
              "--store", str(tmp_path / "s"), "--no-progress", *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("error:"), p.stderr
    assert not (tmp_path / "s").exists()


def test_store_that_is_a_file_exits_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = suite("run", "--backends", "numpy", "--cases", "seed004_vec", "--store", str(f), "--no-progress")
    assert p.returncode == 2 and "not a directory" in p.stderr
