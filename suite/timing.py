"""Timing that can be trusted: inputs on the device first, warm-up and compilation excluded (and
recorded), device work synchronized inside every timed block, rounds grown until a minimum measured
time, then median / IQR / min; throughput as a share of the same device's measured copy bandwidth."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from suite.backend_api import BaseBackend
from suite.dtypes import np_dtype
from suite.runner import Inputs

TIMING_COLUMNS = [
    "backend", "backend_version", "device", "mode", "dtype", "op", "impl", "pass", "batch", "vocab", "bytes",
    "median_s", "iqr_s", "min_s", "rounds", "number", "gbps", "pct_of_copy", "copy_gbps", "copy_gbps_end",
    "compile_s", "samples", "measured_s", "overhead_s", "message",
]
PASSES = ("forward", "forward+backward")
# Default sweep: vocab 2^4 .. 2^18 (odd widths too), batch chosen so float32 inputs grow with the vocab
# from 4 KiB to 256 MiB (one batch per vocab, so GB/s against vocab reads as one line).
DEFAULT_SWEEP: tuple[tuple[int, int], ...] = (
    (64, 16), (8, 1000), (16, 4096), (16, 32768), (83, 50257), (128, 131072), (256, 262147),
)


@dataclass
class Measurement:
    """Per-call times of `rounds` rounds of `number` calls each (seconds)."""

    samples: list[float]
    number: int
    first_call_s: float

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[2] - q[0]


def measure(fn: Callable[[], Any], wait: Callable[[Any], None], min_time: float = 0.2, min_rounds: int = 5,
            max_rounds: int = 1000, round_target: float = 1e-3, clock: Callable[[], float] = time.perf_counter,
            keep_first: bool = False) -> Measurement:
    """Time fn() like pytest-benchmark / torch.utils.benchmark, with the device wait inside the block.

    The first call (compilation, tracing, allocator warm-up) is timed on its own and excluded. The second,
    warm call sets `number`, the calls per round, so a round lasts >= round_target (timer overhead
    negligible); a call that long on its own is a round of one already and is kept as the first sample.
    With `keep_first` (eager modes: nothing to compile) such a slow configuration's first call is a sample
    too unless it took over twice the warm call (one-time work: lazy loading, first-touch allocation):
    excluding two calls of a configuration that runs five cost 40 % of the measured time. Rounds are
    added until they sum to >= min_time and there are >= min_rounds.
    """
    t0 = clock()
    wait(fn())
    first = clock() - t0
    t0 = clock()
    wait(fn())  # warm: caches, lazy allocations
    one = max(clock() - t0, 1e-9)
    number = max(1, math.ceil(round_target / one * (1 - 1e-9)))  # 1e-3 / 2e-4 is 5.000000000000001
    samples: list[float] = ([first] if keep_first and first <= 2 * one else []) + [one] if number == 1 else []
    total = sum(samples)
    while (total < min_time or len(samples) < min_rounds) and len(samples) < max_rounds:
        t0 = clock()
        out = None
        for _ in range(number):
            out = fn()
        wait(out)  # the device finishes this round's work before the clock stops
        dt = clock() - t0
        samples.append(dt / number)
        total += dt
    return Measurement(samples=samples, number=number, first_call_s=first)


def traffic_bytes(op: str, pass_: str, batch: int, vocab: int, itemsize: int) -> int:
    """Bytes the op must read and write at minimum (Triton's 2 * numel * size model for softmax):
    forward reads the logits (and probabilities) and writes its output; backward also reads the
    cotangent and what the forward saved, and writes the logits' gradient."""
    n, rows = batch * vocab, batch
    fwd = {"softmax": 2 * n, "log_softmax": 2 * n, "logsumexp": n + rows, "cross_entropy": n + rows,
           "cross_entropy_mean": n + 1, "soft_cross_entropy": 2 * n + rows}[op] * itemsize
    fwd += 8 * rows if op.startswith("cross_entropy") else 0  # int64 targets
    if pass_ == "forward":
        return fwd
    bwd = {"softmax": 3 * n, "log_softmax": 3 * n, "logsumexp": 2 * n + 2 * rows, "cross_entropy": 2 * n + rows,
           "cross_entropy_mean": 2 * n, "soft_cross_entropy": 3 * n + rows}[op] * itemsize
    return fwd + bwd


def copy_bandwidth(backend: BaseBackend, device: str, nbytes: int, min_time: float) -> tuple[float, str]:
    """STREAM-style copy (read + write) on the device, in GB/s, and how it was done. The source is filled on
    the device (a copy's speed does not depend on the values; 256 MiB of random numbers made on the host
    and moved over cost seconds, twice per backend)."""
    src = backend.full((nbytes // 4,), 1.0, "float32", device)
    fn, how = backend.copy_fn(src)
    m = measure(fn, backend.wait, min_time=min_time)
    return 2 * (nbytes // 4) * 4 / m.median / 1e9, how


def timed_callable(backend: BaseBackend, impl: str, op: str, pass_: str, inp: Inputs,
                   mode: str | None = None) -> Callable[[], Any]:
    """The thing timed, on inputs already on the device: the op, or the op and its gradient (autodiff,
    or numpy's analytic formulas), eager or under the framework's compiler (`mode`; default its own)."""
    from suite.runner import compiled_step, step_args

    fn = compiled_step(backend, (op, impl, "forward" if pass_ == "forward" else "backward"), inp.temperature, mode)
    args = step_args(impl, op, inp)
    return lambda: fn(*args)


def _cotangent_shape(op: str, batch: int, vocab: int) -> tuple[int, ...]:
    return () if op == "cross_entropy_mean" else ((batch, vocab) if op in ("softmax", "log_softmax") else (batch,))


def bench_inputs(backend: BaseBackend, device: str, dtype: str, op: str, batch: int, vocab: int,
                 seed: int = 0) -> Inputs:
    """Random normal logits, targets, uniform probabilities and a cotangent of the op's output shape,
    made on the device by the framework (no host array copied over: on a GPU that cost seconds per
    configuration at 10^8 values), before anything is timed."""
    z = backend.random_normal((batch, vocab), dtype, device, seed)
    t = backend.put_targets(np.random.default_rng(seed).integers(0, vocab, size=batch), device)
    p = backend.full((batch, vocab), 1.0 / vocab, dtype, device)
    g = backend.full(_cotangent_shape(op, batch, vocab), 1.0, dtype, device)
    return Inputs(x=z, z=z, targets=t, probs=p, cotangents={op: g})


class InputCache:
    """The sweep's inputs, made once per (backend, device, dtype, batch, vocab) and shared by every op, impl,
    pass and mode of that shape (an op's cotangent is added to them when first asked for). Only the latest
    shape is held: the default sweep's largest inputs are hundreds of MiB, and the grid order runs each
    shape's configurations together (--order random remakes them when the shape changes)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.inputs: Inputs | None = None
        self.made = 0  # inputs constructed (bench_inputs calls)
        self.seconds = 0.0  # spent making inputs and cotangents

    def get(self, backend: BaseBackend, device: str, dtype: str, op: str, batch: int, vocab: int,
            seed: int = 0) -> Inputs:
        key = (backend.name, device, dtype, batch, vocab, seed)
        t0 = time.perf_counter()
        if key != self.key or self.inputs is None:
            self.key, self.inputs = None, None  # the old arrays go before the new ones are made
            self.inputs, self.key = bench_inputs(backend, device, dtype, op, batch, vocab, seed), key
            self.made += 1
        inp = self.inputs
        if op not in inp.cotangents:
            shape = _cotangent_shape(op, batch, vocab)
            same = next((g for o, g in inp.cotangents.items() if _cotangent_shape(o, batch, vocab) == shape), None)
            inp.cotangents[op] = same if same is not None else backend.full(shape, 1.0, dtype, device)
        self.seconds += time.perf_counter() - t0
        return inp


_SWEEP_INPUTS: list[InputCache] = []  # the running sweep's cache (bench.run_bench), innermost last


@contextlib.contextmanager
def shared_inputs() -> Iterator[InputCache]:
    """Within this block bench_one takes its inputs from one cache (outside it, each call makes its own)."""
    cache = InputCache()
    _SWEEP_INPUTS.append(cache)
    try:
        yield cache
    finally:
        _SWEEP_INPUTS.remove(cache)


def bench_one(backend: BaseBackend, device: str, dtype: str, op: str, impl: str, pass_: str, batch: int,
              vocab: int, min_time: float, seed: int = 0, mode: str | None = None) -> dict:
    """One configuration timed; in mode `compiled` the first call (tracing and compiling) is excluded from
    the samples and recorded as compile_s (first call minus the median call). `measured_s` is the time of
    the rounds kept as samples, `setup_s` the rest (inputs, building the callable, the warm-up calls)."""
    t0 = time.perf_counter()
    mode = mode or backend.default_mode
    cache = _SWEEP_INPUTS[-1] if _SWEEP_INPUTS else InputCache()
    inp = cache.get(backend, device, dtype, op, batch, vocab, seed)
    fn = timed_callable(backend, impl, op, pass_, inp, mode)
    m = measure(fn, backend.wait, min_time=min_time, keep_first=mode != "compiled")
    measured = sum(m.samples) * m.number
    itemsize = np_dtype(dtype).itemsize
    nbytes = traffic_bytes(op, pass_, batch, vocab, itemsize)
    return {
        "median_s": m.median, "iqr_s": m.iqr, "min_s": min(m.samples), "rounds": len(m.samples),
        "number": m.number, "bytes": nbytes, "gbps": nbytes / m.median / 1e9,
        "compile_s": max(m.first_call_s - m.median, 0.0) if mode == "compiled" else np.nan,
        "samples": m.samples, "measured_s": measured,
        "setup_s": max(time.perf_counter() - t0 - measured, 0.0),
    }


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = item.split("x")
        if len(parts) != 2 or not all(x.isdigit() and int(x) > 0 for x in parts):
            raise ValueError(f"bad size {item!r}: expected BATCHxVOCAB with positive integers, e.g. 64x131072")
        out.append((int(parts[0]), int(parts[1])))
    if not out:
        raise ValueError("--sizes is empty; expected e.g. 64x131072,256x8192")
    return out


def threads_for_timing() -> int:
    """Every framework gets the same intra-op thread count: the CPUs this process may run on (its
    affinity, which `python -m suite ab` fixes; numpy's ufuncs use one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None


def from_benchmark_json(path) -> pd.DataFrame:
    """A pytest-benchmark `--benchmark-json` file (from suite/tests/test_benchmarks.py) as the timing
    table's DataFrame, so both tools' numbers can be compared, stored and plotted alike."""
    import json

    with open(path) as fh:
        data = json.load(fh)
    rows = []
    for b in data.get("benchmarks", []):
        info, st = b.get("extra_info", {}), b["stats"]
        if "op" not in info:
            continue  # not one of this suite's benchmarks
        samples = [float(x) for x in st.get("data", [])]
        median = float(st["median"])
        row = {k: info.get(k) for k in ("backend", "backend_version", "device", "dtype", "op", "impl", "pass",
                                         "batch", "vocab", "bytes", "copy_gbps", "compile_s")}
        row.update(median_s=median, iqr_s=float(st["iqr"]), min_s=float(st["min"]), rounds=int(st["rounds"]),
                   number=int(st.get("iterations", 1)), samples=samples, message=f"pytest-benchmark {b['name']}")
        row["gbps"] = row["bytes"] / median / 1e9 if row["bytes"] else float("nan")
        row["pct_of_copy"] = 100 * row["gbps"] / row["copy_gbps"] if row.get("copy_gbps") else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in TIMING_COLUMNS:
        if col not in df:
            df[col] = float("nan")
    return df[TIMING_COLUMNS]
