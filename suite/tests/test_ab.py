"""`python -m suite ab`: interleaved runs in fresh processes, each with its own configuration order,
pinned CPUs and recorded threads, landing in the store under ids that `compare` selects by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from suite.bench import ordered
from suite.tests.helpers import suite_main

ROOT = Path(__file__).resolve().parents[2]


def suite(*args: str) -> subprocess.CompletedProcess:
    """`python -m suite ...` through its `main` in this process (from the checkout, where the protocol's
    fresh processes find the same `suite`)."""
    return suite_main(*args, cwd=ROOT)


def test_random_order_is_a_seeded_permutation():
    items = list(range(50))
    assert ordered(items, "grid", 3) == items
    a, b = ordered(items, "random", 1), ordered(items, "random", 2)
    assert sorted(a) == items and a != items and a != b and a == ordered(items, "random", 1)


def test_nox_sweep_is_the_protocol_default():
    from suite.ab import NOX_SWEEP

    assert f'DEFAULT_SIZES = "{NOX_SWEEP}"' in (ROOT / "noxfile.py").read_text()


def test_protocol_runs_interleaved_fresh_processes_into_the_store(tmp_path):
    store = tmp_path / "s"
    p = suite("ab", "--a", sys.executable, "--b", sys.executable, "--runs", "2", "--backends", "numpy",
              "--sizes", "8x16,4x64", "--ops", "softmax", "--impls", "fused,naive", "--dtypes", "float32",
              "--passes", "forward", "--min-time", "0.01", "--store", str(store), "--id", "ab-t", "--seed", "5")
    assert p.returncode == 0, p.stdout + p.stderr  # A/A with 2 runs per side: inconclusive, not a failure
    meta = json.loads((store / "runs" / "ab-t" / "protocol.json").read_text())
    assert [r["run_id"] for r in meta["runs"]] == ["ab-t-A-01", "ab-t-B-01", "ab-t-B-02", "ab-t-A-02"]
    assert all(r["returncode"] == 0 for r in meta["runs"]) and len({r["seed"] for r in meta["runs"]}) == 4
    assert meta["threads"] == 1 and len(meta["cpu_affinity"]) == 1
    env = json.loads((store / "runs" / "ab-t-B-02" / "timing.json").read_text())
    assert env["order"] == "random" and env["seed"] == meta["runs"][2]["seed"]
    assert env["cpu_affinity"] == meta["cpu_affinity"] and env["copy_bandwidth"]["cpu"]["gbps_end"] > 0
    from suite.ab import ALLOCATOR_ENV  # every run keeps freed memory: no page-fault lottery per run

    want = os.environ.get("GLIBC_TUNABLES", ALLOCATOR_ENV["GLIBC_TUNABLES"])
    assert meta["allocator_env"]["GLIBC_TUNABLES"] == want == env["malloc_env"]["GLIBC_TUNABLES"]
    timing = pd.read_parquet(store / "timing")
    assert sorted(timing.run_id.unique()) == ["ab-t-A-01", "ab-t-A-02", "ab-t-B-01", "ab-t-B-02"]
    assert (timing.groupby("run_id").size() == 4).all() and timing.copy_gbps_end.notna().all()
    assert "inconclusive: too few runs (2+2" in p.stdout and (store / "comparisons" / "ab-t.md").is_file()
    again = suite("compare", "ab-t:A", "ab-t:B", "--store", str(store), "--out", str(tmp_path / "c.md"))
    assert again.returncode == 0 and "timing runs per configuration (each a fresh process): base 2, new 2" \
        in again.stdout


@pytest.mark.parametrize(("args", "mention"), [
    (["--a", "/no/such/python", "--b", sys.executable], "--a '/no/such/python' is not a python"),
    (["--a", sys.executable, "--b", sys.executable, "--cpus", "9999"], "--cpus '9999' is not valid"),
    (["--a", sys.executable, "--b", sys.executable, "--runs", "0"], "--runs must be a positive integer"),
])
def test_bad_protocol_input_exits_2(tmp_path, args, mention):
    p = suite("ab", *args, "--backends", "numpy", "--store", str(tmp_path / "s"))
    assert p.returncode == 2 and mention in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "s").exists()


def test_slowed_build_does_a_quarter_more_work_in_the_same_call(monkeypatch):
    """The power measurement's slow build: the op on 1.25x the rows, reported as the batch asked for."""
    from suite import timing
    from suite.bench_ab import slowed_bench_one
    from suite.runner import loaded

    shapes = []
    real = timing.bench_inputs

    def spy(backend, device, dtype, op, batch, vocab, seed=0):
        shapes.append((batch, vocab))
        return real(backend, device, dtype, op, batch, vocab, seed)

    monkeypatch.setattr(timing, "bench_inputs", spy)
    row = slowed_bench_one(1.25)(loaded("numpy"), "cpu", "float32", "softmax", "fused", "forward", 64, 256, 0.01)
    assert shapes == [(80, 256)]
    assert row["bytes"] == timing.traffic_bytes("softmax", "forward", 64, 256, 4)
    assert row["gbps"] == pytest.approx(row["bytes"] / row["median_s"] / 1e9)
