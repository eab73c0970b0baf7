"""`python -m suite bench` can be watched and stopped: plain progress lines in a pipe, finished configurations
kept on SIGINT/SIGTERM with the run marked interrupted, inputs made once per shape and dtype, and the
overhead beyond --min-time recorded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from suite.tests.helpers import suite_main

SLOW_PLUGIN = '''
"""A numpy softmax that takes SLEEP seconds a call: a configuration lasts long enough to watch and stop."""
import time

import numpy as np

FRAMEWORK = "numpy"
NAME = "slow"
SLEEP = {sleep}


def softmax(x):
    time.sleep(SLEEP)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
'''
# `python -m suite` itself (its exit statuses, its way out after a signal), with the copy-bandwidth calibration on
# 16 MiB instead of 256 MiB (as suite_main does in-process): seconds less per test on a shared machine
SMALL_COPY = ("import runpy, sys; import suite.bench as b; from suite.tests.helpers import COPY_BYTES; "
              "b.COPY_BYTES = COPY_BYTES; sys.argv[0] = 'suite'; runpy.run_module('suite', run_name='__main__')")
LINE = re.compile(r"^timing: (\d+)/(\d+) configs done, (\d+) s elapsed(, now: (.+))?$")
SIZES = ",".join(f"4x{8 * (k + 1)}" for k in range(12))  # 12 sizes x 2 dtypes: 24 configurations


def _bench(tmp_path: Path, sleep: float, *extra: str, sizes: str = SIZES) -> subprocess.Popen:
    """`python -m suite bench` on the slow plug-in in a subprocess, stdout a pipe (not a terminal)."""
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN.format(sleep=sleep))
    env = {**os.environ, "SUITE_PROGRESS_EVERY_S": "0.2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", SMALL_COPY, "bench", "--backends", "numpy", "--plugin", str(plugin),
           "--no-entry-points", "--impls", "slow", "--ops", "softmax", "--passes", "forward",
           "--dtypes", "float32,bfloat16", "--sizes", sizes, "--min-time", "0.01",
           "--store", str(tmp_path / "store"), "--run-id", "r1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])


def _progress(lines: list[str]) -> list[tuple[int, int, str]]:
    return [(int(m[1]), int(m[2]), m[5] or "") for line in lines if (m := LINE.match(line))]


def test_progress_lines_appear_in_a_pipe(tmp_path):
    p = _bench(tmp_path, 0.02, sizes="4x8,4x16,4x24,4x32,4x40,4x48")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    seen = _progress(out.splitlines())
    assert len(seen) >= 3, out  # every 0.2 s over a sweep of 12 configurations of >= 0.12 s each
    assert seen[-1][1] == 12 and {total for d, total, _ in seen if d} == {12}  # skipped devices are not counted
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == 12  # the last line: all done
    assert any(re.fullmatch(r"numpy cpu eager (float32|bfloat16) 4x\d+ softmax slow forward", now)
               for _, _, now in seen), seen
    assert "\r" not in out  # no bar litter in a log


def test_no_progress_prints_no_progress_line(tmp_path):
    p = _bench(tmp_path, 0.05, "--no-progress", sizes="4x8,4x16")  # 4 configurations, > 1 s
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert not _progress(out.splitlines())


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_sweep_keeps_finished_configurations(tmp_path, sig, code):
    p = _bench(tmp_path, 0.03)
    done = 0
    deadline = time.monotonic() + 90
    while done < 3 and time.monotonic() < deadline:  # wait until a few configurations are finished
        line = p.stdout.readline()
        if not line:
            break
        seen = _progress([line.rstrip("\n")])
        done = seen[0][0] if seen else done
    assert done >= 3, p.communicate(timeout=30)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err and "interrupted" in err
    meta = json.loads((tmp_path / "store" / "runs" / "r1" / "timing.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["error"] == ("terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted (^C)")
    files = list((tmp_path / "store" / "timing").rglob("r1.parquet"))
    assert len(files) == 1, files
    df = pd.read_parquet(files[0])
    assert done <= len(df) < 24  # every configuration finished before the signal, and the run was cut short
    assert (df.median_s > 0).all() and (df.impl == "slow").all()
    assert meta["partitions"] == {str(files[0].relative_to(tmp_path / "store" / "timing")): len(df)}


def test_inputs_are_made_once_per_shape_and_dtype_on_the_device(monkeypatch):
    from suite import timing
    from suite.bench import BenchPlan, run_bench
    from suite.runner import loaded

    made: list[tuple] = []
    real = timing.bench_inputs

    def counted(backend, device, dtype, op, batch, vocab, seed=0):
        made.append((dtype, batch, vocab))
        return real(backend, device, dtype, op, batch, vocab, seed)

    monkeypatch.setattr(timing, "bench_inputs", counted)
    backend = loaded("numpy")
    host = []  # arrays of the sweep's shape handed over from the host
    real_put = type(backend).put
    monkeypatch.setattr(type(backend), "put", lambda self, a, dtype, device: (
        host.append(getattr(a, "shape", None)), real_put(self, a, dtype, device))[1])
    monkeypatch.setattr("suite.bench.COPY_BYTES", 2**20)
    sizes = [(4, 16), (2, 40)]
    plan = BenchPlan(backends=["numpy"], devices=["cpu"], dtypes=["float32", "bfloat16"],
                     ops=["softmax", "cross_entropy", "log_softmax"], impls=["fused", "naive"],
                     passes=["forward", "forward+backward"], sizes=sizes, min_time=0.001)
    df, _ = run_bench(plan, progress=False)
    assert len(df) == 2 * 2 * 3 * 2 * 2 and (df.median_s > 0).all(), df.message.unique()
    assert sorted(made) == sorted((dt, b, v) for b, v in sizes for dt in ("float32", "bfloat16"))
    assert plan.costs.inputs_made == 4
    assert not [s for s in host if s and len(s) == 2], host  # the logits are made by the framework


def test_overhead_is_recorded_per_configuration_and_for_the_run(tmp_path):
    r = suite_main("bench", "--backends", "numpy", "--dtypes", "float32", "--ops", "softmax", "--impls", "fused",
                   "--sizes", "8x64,4x128", "--min-time", "0.01", "--store", str(tmp_path), "--run-id", "o1",
                   "--no-progress")
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(tmp_path / "timing")
    assert (df.measured_s >= 0.01).all() and (df.overhead_s >= 0).all()
    over = json.loads((tmp_path / "runs" / "o1" / "timing.json").read_text())["overhead"]
    assert over["configs"] == 4 and over["measured_s"] == pytest.approx(df.measured_s.sum(), abs=1e-3)
    assert over["wall_s"] > over["measured_s"] and over["inputs_made"] == 2
    assert set(over["parts_s"]) == {"inputs", "copy_bandwidth", "load_frameworks", "load_plugins",
                                    "warm_up_and_rest_of_configs"}
    assert re.search(r"^time: [\d.]+ s for [\d.]+ s of measured rounds \(overhead \d+ %", r.stdout, re.M), r.stdout


class StepClock:
    """fn's calls take `costs[i]` seconds (the last repeats), on a fake clock."""

    def __init__(self, *costs: float):
        self.t, self.costs, self.calls = 0.0, costs, 0

    def clock(self) -> float:
        return self.t

    def fn(self) -> None:
        self.t += self.costs[min(self.calls, len(self.costs) - 1)]
        self.calls += 1


@pytest.mark.parametrize("first, kept", [(0.015, True), (0.05, False)])
def test_a_slow_eager_configuration_spends_no_call_on_warming_up_unless_the_first_was_cold(first, kept):
    from suite.timing import measure

    c = StepClock(first, 0.01)
    m = measure(c.fn, lambda out: None, min_time=0.05, clock=c.clock, keep_first=True)
    assert m.number == 1 and m.first_call_s == pytest.approx(first)
    assert (m.samples[0] == pytest.approx(first)) is kept
    assert c.calls == len(m.samples) + (0 if kept else 1)  # every call but a cold first one is a sample
    compiled = StepClock(first, 0.01)
    m = measure(compiled.fn, lambda out: None, min_time=0.05, clock=compiled.clock)  # compiled: first excluded
    assert compiled.calls == len(m.samples) + 1 and first not in m.samples
