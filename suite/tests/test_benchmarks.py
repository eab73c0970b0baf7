"""pytest-benchmark over the timing matrix, with the device wait inside the benchmarked callable.

`pytest suite/tests/test_benchmarks.py --benchmark-only --benchmark-json=out.json` times a
representative subset (add `--bench-all` for every dtype, op, impl and the default size sweep);
`python -m suite import-benchmark out.json --store DIR` adds the JSON to the store's timing table, and
`pytest-benchmark compare` / `--benchmark-compare-fail=median:10%` work on it as on any project.
Without --benchmark-only each benchmark runs once, as a smoke test of the timed callables.
"""

from __future__ import annotations

import numpy as np
import pytest

from suite.backend_api import discover
from suite.dtypes import DTYPES, np_dtype
from suite.ops import IMPLS, OPS
from suite.runner import loaded
from suite.timing import DEFAULT_SWEEP, PASSES, bench_inputs, copy_bandwidth, timed_callable, traffic_bytes

BACKENDS = [n for n, i in discover().items() if i.installed]
SUBSET = {"dtypes": ("float32", "bfloat16"), "ops": ("softmax", "cross_entropy"), "impls": ("fused", "shifted"),
          "sizes": ((64, 8192),)}
_COPY: dict[str, float] = {}


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    full = metafunc.config.getoption("bench_all")
    dtypes = DTYPES if full else SUBSET["dtypes"]
    ops = OPS if full else SUBSET["ops"]
    impls = [i for i in IMPLS if i != "temperature"] if full else SUBSET["impls"]
    sizes = DEFAULT_SWEEP if full else SUBSET["sizes"]
    params = [(b, "cpu", d, o, i, p, s) for b in BACKENDS for s in sizes for d in dtypes for o in ops
              for i in impls for p in PASSES]
    metafunc.parametrize("bench_case", params, ids=["-".join(map(str, c[:6])) + f"-{c[6][0]}x{c[6][1]}"
                                                    for c in params])


def test_timing(benchmark, bench_case):
    backend_name, device, dtype, op, impl, pass_, (batch, vocab) = bench_case
    backend = loaded(backend_name)
    if backend.devices().get(device) is not None:
        pytest.skip(backend.devices()[device])
    fn = timed_callable(backend, impl, op, pass_, bench_inputs(backend, device, dtype, op, batch, vocab))

    def synced():
        out = fn()
        backend.wait(out)  # the device finishes inside the benchmarked callable
        return out

    out = synced()  # compile / trace / warm-up outside the measurement
    if device not in _COPY:
        _COPY[device] = copy_bandwidth(loaded("numpy") if device == "cpu" else backend, device, 64 * 2**20, 0.2)[0]
    benchmark.extra_info.update(
        backend=backend_name, backend_version=backend.version, device=device, dtype=dtype, op=op, impl=impl,
        **{"pass": pass_}, batch=batch, vocab=vocab, copy_gbps=_COPY[device],
        bytes=traffic_bytes(op, pass_, batch, vocab, np_dtype(dtype).itemsize))
    out = benchmark(synced)
    assert np.isfinite(backend.to_numpy(out)).all()  # random normal logits: every result is finite
