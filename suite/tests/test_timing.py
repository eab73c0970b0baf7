"""Unit tests of the timer, the traffic model, size parsing, the bench CLI and the JSON import."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from suite.tests.helpers import suite_main
from suite.timing import TIMING_COLUMNS, from_benchmark_json, measure, parse_sizes, traffic_bytes


class FakeClock:
    """Each call of fn advances time by `cost`; the wait adds `wait_cost` (a device finishing)."""

    def __init__(self, cost: float, wait_cost: float = 0.0, first_extra: float = 0.0):
        self.t, self.cost, self.wait_cost, self.first_extra = 0.0, cost, wait_cost, first_extra
        self.calls = self.waits = 0

    def clock(self) -> float:
        return self.t

    def fn(self):
        self.t += self.cost + (self.first_extra if self.calls == 0 else 0.0)
        self.calls += 1
        return self.calls

    def wait(self, out):
        self.t += self.wait_cost
        self.waits += 1


def test_measure_excludes_the_first_call_and_counts_the_wait_inside_each_round():
    fc = FakeClock(cost=1e-4, wait_cost=1e-4, first_extra=5.0)  # a 5 s "compile" on the first call
    m = measure(fc.fn, fc.wait, min_time=0.05, clock=fc.clock)
    assert m.first_call_s == pytest.approx(5.0 + 2e-4)
    assert m.number == 5  # 1 ms rounds at 0.2 ms per call
    # each round: 5 calls + one wait, per call = (5 * 1e-4 + 1e-4) / 5
    assert m.median == pytest.approx(1.2e-4)
    assert sum(s * m.number for s in m.samples) >= 0.05 and len(m.samples) >= 5
    assert m.iqr == pytest.approx(0.0, abs=1e-12)


def test_measure_grows_rounds_to_the_minimum_time():
    fc = FakeClock(cost=0.01)
    m = measure(fc.fn, fc.wait, min_time=0.3, clock=fc.clock)
    assert m.number == 1 and len(m.samples) == 30


def test_traffic_model():
    assert traffic_bytes("softmax", "forward", 4, 1000, 4) == 2 * 4000 * 4  # read once, write once
    assert traffic_bytes("softmax", "forward+backward", 4, 1000, 2) == 5 * 4000 * 2
    assert traffic_bytes("cross_entropy", "forward", 4, 1000, 4) == (4000 + 4) * 4 + 8 * 4


def test_parse_sizes():
    assert parse_sizes("64x131072, 256X8192") == [(64, 131072), (256, 8192)]
    for bad in ("64", "64x", "0x10", "axb", ""):
        with pytest.raises(ValueError):
            parse_sizes(bad)


@pytest.mark.parametrize("args", [["--sizes", "64"], ["--sizes", "0x8"], ["--ops", "nope"], ["--min-time", "0"],
                                  ["--passes", "backward"]])
def test_bench_cli_bad_input_exits_2(tmp_path, args):
    r = suite_main("bench", "--backends", "numpy", "--store", str(tmp_path / "o"), *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error:")
    assert not (tmp_path / "o").exists()


def test_bench_cli_writes_table_plot_and_env(tmp_path):
    out = tmp_path / "o"
    r = suite_main("bench", "--backends", "numpy", "--dtypes", "float32", "--ops", "softmax", "--impls", "fused,naive",
                   "--sizes", "8x64", "--min-time", "0.01", "--store", str(out), "--run-id", "t1", "--no-progress")
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out / "timing")  # hive partitions: backend, backend_version, device at the end
    assert sorted(df.columns) == sorted([*TIMING_COLUMNS, "run_id"]) and len(df) == 4  # 2 impls x 2 passes
    assert (df.median_s > 0).all() and (df.rounds >= 5).all() and (df.gbps > 0).all()
    assert (df.pct_of_copy > 0).all() and df.compile_s.isna().all()  # numpy compiles nothing
    env = json.loads((out / "runs" / "t1" / "timing.json").read_text())
    assert env["copy_bandwidth"]["cpu"]["gbps"] > 0
    assert (out / "runs" / "t1" / "timing_gbps.png").stat().st_size > 1000


def test_from_benchmark_json(tmp_path):
    doc = {"benchmarks": [
        {"name": "test_timing[x]", "extra_info": {"backend": "torch", "backend_version": "2", "device": "cpu",
                                                  "dtype": "float32", "op": "softmax", "impl": "fused",
                                                  "pass": "forward", "batch": 2, "vocab": 4, "bytes": 64,
                                                  "copy_gbps": 10.0},
         "stats": {"median": 2e-9, "iqr": 1e-10, "min": 1e-9, "rounds": 3, "iterations": 7,
                   "data": [1e-9, 2e-9, 3e-9]}},
        {"name": "unrelated", "extra_info": {}, "stats": {"median": 1.0, "iqr": 0, "min": 1, "rounds": 1}},
    ]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    df = from_benchmark_json(path)
    assert list(df.columns) == TIMING_COLUMNS and len(df) == 1
    row = df.iloc[0]
    assert row.gbps == pytest.approx(32.0) and row.pct_of_copy == pytest.approx(320.0)
    assert row.rounds == 3 and row.number == 7 and list(row.samples) == [1e-9, 2e-9, 3e-9]
