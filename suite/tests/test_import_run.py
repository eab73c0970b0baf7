"""`python -m suite.import_run`: a run made in another store lands byte for byte where that store would put
it and loads; anything the store's reader would refuse is an exit-2 one-liner and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from suite.import_run import main
from suite.store import Store
from suite.tests.helpers import suite_main


@pytest.fixture(scope="module")
def made_elsewhere(tmp_path_factory) -> tuple[Path, Path]:
    """One partition file and its env.json from a small numpy run."""
    store = tmp_path_factory.mktemp("elsewhere") / "store"
    p = suite_main("run", "--backends", "numpy", "--cases", "seed000_batch", "--dtypes", "float32",
                   "--ops", "softmax", "--store", str(store), "--run-id", "made-elsewhere", "--jobs", "1",
                   "--no-progress")
    assert p.returncode == 0, p.stderr
    (parquet,) = (store / "accuracy").rglob("*.parquet")
    return parquet, store / "runs" / "made-elsewhere" / "accuracy.json"


def _run(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def test_import_lands_where_the_store_puts_it_and_loads(made_elsewhere, tmp_path, capsys):
    parquet, env = made_elsewhere
    rc, err = _run(capsys, parquet, env, "--store", tmp_path)
    assert rc == 0, err
    landed = tmp_path / parquet.relative_to(parquet.parents[4])
    assert landed.read_bytes() == parquet.read_bytes()
    assert (tmp_path / "runs" / "made-elsewhere" / "accuracy.json").read_bytes() == env.read_bytes()
    problems: list[str] = []
    df = Store(tmp_path).load("accuracy", problems)
    assert problems == [] and len(df) == len(pd.read_parquet(parquet))
    rc, err = _run(capsys, parquet, env, "--store", tmp_path)  # a second time: refused, nothing replaced
    assert rc == 2 and "already in" in err and err.count("\n") == 1


@pytest.mark.parametrize("damage", ["rows", "run_id", "status", "devices"])
def test_what_the_store_would_refuse_is_exit_2_and_writes_nothing(made_elsewhere, tmp_path, capsys, damage):
    parquet, env = made_elsewhere
    meta = json.loads(env.read_text())
    if damage == "rows":  # the store's own check: rows recorded vs rows in the file
        meta.pop("partitions", None)
        meta["rows"] += 1
    elif damage == "run_id":
        meta["run_id"] = "another-run"
    elif damage == "status":
        meta["status"] = "running"
    else:
        meta.pop("partitions", None)
        meta["devices"] = {"numpy/cpu": "x", "torch/cpu": "y"}
    bad = tmp_path / "env.json"
    bad.write_text(json.dumps(meta))
    rc, err = _run(capsys, parquet, bad, "--store", tmp_path / "store")
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "store").exists()
